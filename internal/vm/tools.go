package vm

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// HostTools are shipped into every guest when the host has them, with
// their shared libraries. The iptables names are symlinks to the
// xtables-*-multi binaries, which dispatch on argv[0]: the symlink names
// are kept.
var HostTools = []string{
	"ip", "tc", "nft", "tcpdump", "prometheus",
	"iptables", "ip6tables",
	"iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
	"ip6tables-legacy-save", "ip6tables-legacy-restore",
	"iptables-nft", "ip6tables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables-nft-save", "ip6tables-nft-restore",
}

// xtablesDir holds the iptables extensions xtables-*-multi dlopen()s.
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

var toolDirs = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// findTool returns the host path of a tool, or "".
func findTool(name string) string {
	for _, d := range toolDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// symlinkChain follows path's symlinks and returns every path on the way,
// the real file last.
func symlinkChain(path string) []string {
	chain := []string{path}
	for range 16 {
		t, err := os.Readlink(path)
		if err != nil {
			break
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(path), t)
		}
		path = t
		chain = append(chain, path)
	}
	return chain
}

// addTools adds HostTools to s under /usr/sbin: the real binary under its
// own name and each name on its symlink chain (skipping /etc/alternatives)
// as a symlink to the next, so argv[0] stays what the test called.
func (s *fileSet) addTools(ctx context.Context, log io.Writer) error {
	xtables := false
	for _, name := range HostTools {
		host := findTool(name)
		if host == "" {
			logf(log, "host tool %s not found, not shipped", name)
			continue
		}
		chain := symlinkChain(host)
		var names []string
		for _, p := range chain {
			if !strings.HasPrefix(p, "/etc/alternatives/") {
				names = append(names, filepath.Base(p))
			}
		}
		realPath := chain[len(chain)-1]
		if err := s.addBinary(ctx, "/usr/sbin/"+filepath.Base(realPath), realPath); err != nil {
			return err
		}
		for i := 0; i+1 < len(names); i++ {
			if names[i] != names[i+1] {
				s.link("/usr/sbin/"+names[i], names[i+1])
			}
		}
		xtables = xtables || strings.HasPrefix(filepath.Base(realPath), "xtables-")
	}
	if xtables {
		return s.addXtablesExtensions(ctx)
	}
	return nil
}

func (s *fileSet) addXtablesExtensions(ctx context.Context) error {
	exts, _ := filepath.Glob(filepath.Join(xtablesDir, "*.so"))
	for _, e := range exts {
		if err := s.addBinary(ctx, guestLibPath(e), e); err != nil {
			return err
		}
	}
	return nil
}
