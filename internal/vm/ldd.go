package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// sharedLibs returns the shared-library closure of a dynamically linked
// host binary as ldd prints it (the dynamic loader included), or nothing
// for a static one.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	return sharedLibsEnv(ctx, nil, bin)
}

// sharedLibsEnv is sharedLibs with extra environment (LD_LIBRARY_PATH).
func sharedLibsEnv(ctx context.Context, env []string, bin string) ([]string, error) {
	out, err := runCmd(ctx, append([]string{"LC_ALL=C"}, env...), "", "ldd", bin)
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) || strings.Contains(err.Error(), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("listing shared libraries of %s: %w", bin, err)
	}
	return parseLdd(out)
}

// parseLdd extracts library paths from ldd output:
//
//	linux-vdso.so.1 (0x...)                 skipped (kernel provided)
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)
func parseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		if _, right, ok := strings.Cut(line, "=>"); ok {
			f := strings.Fields(right)
			if len(f) == 0 || f[0] == "not" {
				return nil, fmt.Errorf("ldd: unresolved library: %s", line)
			}
			libs = append(libs, f[0])
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			libs = append(libs, f[0])
		}
	}
	return libs, sc.Err()
}

// guestLibPath is where a library ldd named goes in the guest: its folder
// with symlinks resolved (/lib64 -> /usr/lib64 on merged-/usr hosts, which
// the guest mirrors), under the name the loader looks for.
func guestLibPath(lib string) string {
	dir, err := filepath.EvalSymlinks(filepath.Dir(lib))
	if err != nil {
		dir = filepath.Dir(lib)
	}
	return filepath.Join(dir, filepath.Base(lib))
}

// fileSet collects host files to copy into a guest archive, keyed by guest
// path, so closures of many binaries are copied once.
type fileSet struct {
	files    map[string]string // guest path -> host path (read through symlinks)
	symlinks map[string]string // guest path -> link target
	order    []string
}

func newFileSet() *fileSet {
	return &fileSet{files: map[string]string{}, symlinks: map[string]string{}}
}

func (s *fileSet) add(guest, host string) {
	if _, ok := s.files[guest]; ok {
		return
	}
	if _, ok := s.symlinks[guest]; ok {
		return
	}
	s.files[guest] = host
	s.order = append(s.order, guest)
}

func (s *fileSet) link(guest, target string) {
	if _, ok := s.files[guest]; ok {
		return
	}
	if _, ok := s.symlinks[guest]; !ok {
		s.order = append(s.order, guest)
	}
	s.symlinks[guest] = target
}

// addBinary adds a host binary at guest path and its shared libraries.
func (s *fileSet) addBinary(ctx context.Context, guest, host string) error {
	s.add(guest, host)
	libs, err := sharedLibs(ctx, host)
	if err != nil {
		return err
	}
	for _, l := range libs {
		s.add(guestLibPath(l), l)
	}
	return nil
}

// write copies the set into c.
func (s *fileSet) write(c *CPIOWriter) error {
	for _, g := range s.order {
		if t, ok := s.symlinks[g]; ok {
			if err := c.Symlink(g, t); err != nil {
				return err
			}
			continue
		}
		h := s.files[g]
		data, err := os.ReadFile(h)
		if err != nil {
			return fmt.Errorf("reading %s: %w", h, err)
		}
		perm := os.FileMode(0o644)
		if st, err := os.Stat(h); err == nil {
			perm = st.Mode().Perm()
		}
		if err := c.File(g, perm, data); err != nil {
			return err
		}
	}
	return nil
}
