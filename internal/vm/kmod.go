package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// BuildModules builds the out-of-tree module folders srcs (each holding a
// Kbuild or Makefile for make -C <KDIR> M=<dir>) against k's headers and
// returns the folder holding the resulting .ko files. Results are cached per
// kernel and source contents. bookworm's kernels build with the host's
// gcc-12; sid's with its own compiler inside a cached debootstrap chroot
// ([EnsureChroot]), created on first use.
func BuildModules(ctx context.Context, cache Cache, k Kernel, srcs []string, log io.Writer) (string, error) {
	key, err := moduleKey(k, srcs)
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache.kmodDir(k.Release), key)
	if fileExists(filepath.Join(out, completeStamp)) {
		return out, nil
	}
	build := out + ".build"
	for _, d := range []string{out, build} {
		if err := os.RemoveAll(d); err != nil {
			return "", fmt.Errorf("clearing module build: %w", err)
		}
	}
	defer os.RemoveAll(build)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("creating module dir: %w", err)
	}
	for _, src := range srcs {
		dst := filepath.Join(build, filepath.Base(src))
		if err := copySources(src, dst); err != nil {
			return "", err
		}
		if err := makeModule(ctx, cache, k, dst, log); err != nil {
			return "", fmt.Errorf("building module %s for %s: %w", filepath.Base(src), k.Release, err)
		}
		if err := collectKos(dst, out); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(out, completeStamp), nil, 0o644); err != nil {
		return "", fmt.Errorf("marking modules built: %w", err)
	}
	pruneModuleBuilds(cache.kmodDir(k.Release), keptModuleBuilds)
	return out, nil
}

// keptModuleBuilds is how many module builds (source versions) are kept
// per kernel; editing kmod/ makes a new one each time.
const keptModuleBuilds = 4

// pruneModuleBuilds removes all but the keep most recent builds in dir.
func pruneModuleBuilds(dir string, keep int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type build struct {
		path string
		mod  int64
	}
	var builds []build
	for _, e := range entries {
		if st, err := os.Stat(filepath.Join(dir, e.Name(), completeStamp)); err == nil {
			builds = append(builds, build{filepath.Join(dir, e.Name()), st.ModTime().UnixNano()})
		}
	}
	sort.Slice(builds, func(i, j int) bool { return builds[i].mod > builds[j].mod })
	for i := keep; i < len(builds); i++ {
		os.RemoveAll(builds[i].path)
	}
}

// makeModule runs kbuild for one module folder, on the host or in the chroot.
func makeModule(ctx context.Context, cache Cache, k Kernel, dir string, log io.Writer) error {
	cc, err := kernelCC(k)
	if err != nil {
		return err
	}
	if !k.Line.Chroot {
		if _, err := exec.LookPath("x86_64-linux-gnu-" + cc); err != nil {
			return fmt.Errorf("kernel %s needs %s on the host: %w", k.Release, cc, err)
		}
		_, err := runCmd(ctx, nil, "", "make", "-C", k.HeadersDir(), "M="+dir, "modules")
		return err
	}
	root, err := EnsureChroot(ctx, cache, cc, log)
	if err != nil {
		return err
	}
	// A private mount namespace: the bind mounts vanish with the command.
	// The kernel tree is mounted at its host path, which the rewritten
	// headers Makefile names.
	script := `set -e
C=$1 K=$2 B=$3 KDIR=$4
mkdir -p "$C$K" "$C$B"
mount --bind "$K" "$C$K"
mount --bind "$B" "$C$B"
mount -t proc proc "$C/proc"
mount --bind /dev "$C/dev"
exec chroot "$C" make -C "$KDIR" M="$B" modules`
	_, err = runCmd(ctx, nil, "", "unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, "sh", root, k.Root, dir, k.HeadersDir())
	return err
}

var ccRE = regexp.MustCompile(`(?m)^CC\s*=.*\)\s*(gcc-[0-9]+)\s*$`)

// kernelCC returns the compiler (gcc-N) the kernel was built with, from the
// headers' .kernelvariables.
func kernelCC(k Kernel) (string, error) {
	data, err := os.ReadFile(filepath.Join(k.HeadersDir(), ".kernelvariables"))
	if err != nil {
		return "", fmt.Errorf("reading kernel compiler: %w", err)
	}
	m := ccRE.FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("reading kernel compiler: no CC in %s/.kernelvariables", k.HeadersDir())
	}
	return string(m[1]), nil
}

// moduleKey hashes the kernel release and the module sources.
func moduleKey(k Kernel, srcs []string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, k.Release)
	for _, src := range srcs {
		files, err := sourceFiles(src)
		if err != nil {
			return "", err
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				return "", fmt.Errorf("hashing module sources: %w", err)
			}
			fmt.Fprintf(h, "%s\x00%s\x00%d\x00", filepath.Base(src), f, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// sourceFiles lists a module folder's sources, build products left out.
func sourceFiles(src string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.Type().IsRegular() && !buildProduct(d.Name()) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing module sources in %s: %w", src, err)
	}
	sort.Strings(files)
	return files, nil
}

func buildProduct(name string) bool {
	for _, suf := range []string{".o", ".ko", ".mod", ".mod.c", ".cmd", ".symvers", ".order", ".a"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return strings.HasPrefix(name, ".")
}

func copySources(src, dst string) error {
	files, err := sourceFiles(src)
	if err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return fmt.Errorf("copying module sources: %w", err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("copying module sources: %w", err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("copying module sources: %w", err)
		}
	}
	return nil
}

// collectKos moves the .ko files kbuild left in dir to out.
func collectKos(dir, out string) error {
	kos, _ := filepath.Glob(filepath.Join(dir, "*.ko"))
	if len(kos) == 0 {
		return fmt.Errorf("building modules in %s: no .ko produced", dir)
	}
	for _, ko := range kos {
		dst := filepath.Join(out, filepath.Base(ko))
		if fileExists(dst) {
			return fmt.Errorf("building modules: two module folders produce %s", filepath.Base(ko))
		}
		if err := os.Rename(ko, dst); err != nil {
			return fmt.Errorf("collecting %s: %w", filepath.Base(ko), err)
		}
	}
	return nil
}

// listKos returns the .ko files in dir.
func listKos(dir string) []string {
	kos, _ := filepath.Glob(filepath.Join(dir, "*.ko"))
	return kos
}

// chrootMu serialises EnsureChroot: a run starts it early, and the module
// build of the sid line waits for it.
var chrootMu sync.Mutex

// EnsureChroot returns a debootstrap --variant=minbase sid chroot holding
// compiler cc (gcc-16 for 7.2), make and what kbuild's tools need, creating
// it in the cache on first use (about 45 s and 550 MiB).
func EnsureChroot(ctx context.Context, cache Cache, cc string, log io.Writer) (string, error) {
	chrootMu.Lock()
	defer chrootMu.Unlock()
	dir := cache.chrootDir() + "-" + cc
	if fileExists(filepath.Join(dir, completeStamp)) {
		return dir, nil
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("clearing partial chroot: %w", err)
	}
	mirror, keyring := hostMirror()
	pkgs := []string{cc, "make", "libc6-dev", "libelf1t64", "libssl3t64", "zlib1g", "pahole"}
	logf(log, "creating sid chroot with %s (debootstrap, about a minute)", strings.Join(pkgs, " "))
	if _, err := runCmd(ctx, nil, "", "debootstrap", "--variant=minbase", "--keyring="+keyring,
		"--include="+strings.Join(pkgs, ","), "sid", tmp, mirror); err != nil {
		return "", fmt.Errorf("creating sid chroot: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, completeStamp), nil, 0o644); err != nil {
		return "", fmt.Errorf("creating sid chroot: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("replacing sid chroot: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("storing sid chroot: %w", err)
	}
	return dir, nil
}

// kmodFiles adds the modules in dir to the guest's PKTFATE_KMOD_DIR.
func kmodFiles(c *CPIOWriter, dir string) error {
	for _, ko := range listKos(dir) {
		data, err := os.ReadFile(ko)
		if err != nil {
			return fmt.Errorf("reading %s: %w", filepath.Base(ko), err)
		}
		if err := c.File(guestKmod+"/"+filepath.Base(ko), 0o644, data); err != nil {
			return err
		}
	}
	return nil
}
