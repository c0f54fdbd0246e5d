package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Kernel is one downloaded and extracted guest kernel. Its files live in the
// cache and are never installed into the host.
type Kernel struct {
	Line    Line
	Release string // uname -r
	Dir     string // cache folder of this kernel
	Root    string // every package of the kernel, dpkg-deb -x'ed
	BzImage string // the compressed kernel as packaged
	Vmlinux string // uncompressed ELF for PVH boot; empty when extraction failed
}

// ModulesDir is the kernel's modules folder (/lib/modules on bookworm,
// /usr/lib/modules on sid).
func (k Kernel) ModulesDir() string {
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(k.Root, d, k.Release)
		if fileExists(filepath.Join(p, "kernel")) {
			return p
		}
	}
	return filepath.Join(k.Root, "lib/modules", k.Release)
}

// HeadersDir is the KDIR to build out-of-tree modules against.
func (k Kernel) HeadersDir() string {
	return filepath.Join(k.Root, "usr/src", "linux-headers-"+k.Release)
}

// BootImage is what QEMU's -kernel gets: the vmlinux when there is one.
func (k Kernel) BootImage() string {
	if k.Vmlinux != "" {
		return k.Vmlinux
	}
	return k.BzImage
}

const completeStamp = ".complete"

// FetchKernel returns the cached kernel of res, downloading and extracting
// it first when the cache does not hold it complete. A partial earlier
// attempt is discarded. The downloaded .deb files are deleted once
// extracted.
func FetchKernel(ctx context.Context, cache Cache, apt *Apt, line Line, res Resolved, log io.Writer) (Kernel, bool, error) {
	dir := cache.kernelDir(res.Release)
	k := Kernel{Line: line, Release: res.Release, Dir: dir, Root: filepath.Join(dir, "root")}
	if fileExists(filepath.Join(dir, completeStamp)) {
		return k.locate(), false, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return k, false, fmt.Errorf("clearing partial kernel %s: %w", res.Release, err)
	}
	debs := filepath.Join(cache.debDir(), res.Release)
	logf(log, "%s: downloading %s", line.Name, strings.Join(res.Packages, " "))
	if err := apt.Download(ctx, debs, res.Packages...); err != nil {
		return k, true, err
	}
	if err := extractDebs(ctx, debs, k.Root); err != nil {
		return k, true, err
	}
	k = k.locate()
	if err := rewriteHeadersMakefile(k); err != nil {
		return k, true, err
	}
	if err := k.extractVmlinux(log); err != nil {
		return k, true, err
	}
	if err := os.WriteFile(filepath.Join(dir, lineStamp), []byte(line.Name+"\n"), 0o644); err != nil {
		return k, true, fmt.Errorf("marking kernel %s: %w", res.Release, err)
	}
	if err := os.WriteFile(filepath.Join(dir, completeStamp), []byte(res.Version+"\n"), 0o644); err != nil {
		return k, true, fmt.Errorf("marking kernel %s complete: %w", res.Release, err)
	}
	if err := os.RemoveAll(debs); err != nil {
		return k, true, fmt.Errorf("removing downloaded packages: %w", err)
	}
	pruneKernels(cache, line, res.Release, log)
	return k, true, nil
}

// lineStamp records which line a cached kernel belongs to, for pruning.
const lineStamp = ".line"

// pruneKernels removes the cached kernels (and modules built for them) of
// line other than release: a line's kernel is replaced when Debian
// publishes a newer one.
func pruneKernels(cache Cache, line Line, release string, log io.Writer) {
	dirs, _ := filepath.Glob(cache.kernelDir("*"))
	for _, d := range dirs {
		rel := filepath.Base(d)
		owner, err := os.ReadFile(filepath.Join(d, lineStamp))
		if err != nil || rel == release || strings.TrimSpace(string(owner)) != line.Name {
			continue
		}
		logf(log, "%s: removing superseded kernel %s from the cache", line.Name, rel)
		os.RemoveAll(d)
		os.RemoveAll(cache.kmodDir(rel))
	}
}

// locate fills in the image paths; bookworm keeps the image in /boot, sid
// next to the modules.
func (k Kernel) locate() Kernel {
	for _, p := range []string{
		filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release),
		filepath.Join(k.Root, "usr/lib/modules", k.Release, "vmlinuz"),
		filepath.Join(k.Root, "lib/modules", k.Release, "vmlinuz"),
	} {
		if fileExists(p) {
			k.BzImage = p
			break
		}
	}
	if v := filepath.Join(k.Dir, "vmlinux"); fileExists(v) {
		k.Vmlinux = v
	}
	return k
}

// extractDebs unpacks every .deb in dir into root, two at a time.
func extractDebs(ctx context.Context, dir, root string) error {
	debs, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil || len(debs) == 0 {
		return fmt.Errorf("extracting kernel: no packages in %s", dir)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("extracting kernel: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, deb := range debs {
		g.Go(func() error {
			if _, err := runCmd(ctx, nil, "", "dpkg-deb", "-x", deb, root); err != nil {
				return fmt.Errorf("extracting %s: %w", filepath.Base(deb), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// rewriteHeadersMakefile points the absolute /usr/src paths of the headers'
// Makefile (the include of the common headers; sid also sets KBUILD_OUTPUT)
// at the extracted tree. The sid chroot bind-mounts the tree at the same
// path, so the rewritten file works there too.
func rewriteHeadersMakefile(k Kernel) error {
	mk := filepath.Join(k.HeadersDir(), "Makefile")
	data, err := os.ReadFile(mk)
	if err != nil {
		return fmt.Errorf("rewriting headers makefile: %w", err)
	}
	fixed := rewriteUsrSrc(string(data), k.Root)
	if err := os.WriteFile(mk, []byte(fixed), 0o644); err != nil {
		return fmt.Errorf("rewriting headers makefile: %w", err)
	}
	return nil
}

// rewriteUsrSrc prefixes every absolute /usr/src/ path in a makefile with root.
func rewriteUsrSrc(mk, root string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(mk, "\n") {
		if !strings.Contains(line, root) {
			line = strings.ReplaceAll(line, " /usr/src/", " "+root+"/usr/src/")
			line = strings.ReplaceAll(line, "=/usr/src/", "="+root+"/usr/src/")
		}
		b.WriteString(line)
	}
	return b.String()
}

// extractVmlinux writes Dir/vmlinux; failure is logged, not fatal: QEMU then
// boots the bzImage, a few seconds slower.
func (k *Kernel) extractVmlinux(log io.Writer) error {
	if k.BzImage == "" {
		return fmt.Errorf("kernel %s: no vmlinuz in its packages", k.Release)
	}
	bz, err := os.ReadFile(k.BzImage)
	if err != nil {
		return fmt.Errorf("reading kernel image: %w", err)
	}
	elf, err := ExtractVmlinux(bz)
	if err != nil {
		logf(log, "%s: %v; booting the bzImage instead", k.Line.Name, err)
		return nil
	}
	out := filepath.Join(k.Dir, "vmlinux")
	if err := os.WriteFile(out, elf, 0o644); err != nil {
		return fmt.Errorf("writing vmlinux: %w", err)
	}
	k.Vmlinux = out
	return nil
}
