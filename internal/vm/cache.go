package vm

import (
	"os"
	"path/filepath"
)

// DefaultCacheDir is where downloads, extracted kernels, base initramfs
// archives, built modules and the sid chroot are kept between runs.
const DefaultCacheDir = "/var/cache/pktfate-vm"

// CacheDir returns $PKTFATE_VM_CACHE, or DefaultCacheDir when unset.
func CacheDir() string {
	if d := os.Getenv("PKTFATE_VM_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Cache layout, all below one root:
//
//	apt/                private apt configuration, lists and archives
//	resolve/<line>.json newest kernel of a line, re-resolved once a day
//	debs/               downloaded .deb files
//	kernels/<release>/  root/ (dpkg-deb -x of every package), vmlinux,
//	                    base-<hash>.cpio, .complete
//	kmod/<release>/<hash>/ modules built for that kernel
//	chroot-sid-gcc-N/   debootstrap chroot with sid's compiler (built on demand)
type Cache struct {
	Dir string
}

func (c Cache) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

func (c Cache) aptDir() string                  { return c.path("apt") }
func (c Cache) debDir() string                  { return c.path("debs") }
func (c Cache) resolveFile(line string) string  { return c.path("resolve", line+".json") }
func (c Cache) kernelDir(release string) string { return c.path("kernels", release) }
func (c Cache) kmodDir(release string) string   { return c.path("kmod", release) }
func (c Cache) chrootDir() string               { return c.path("chroot-sid") }

// fileExists reports whether path exists (any type).
func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
