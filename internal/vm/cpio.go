package vm

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// CPIOWriter writes a "newc" (SVR4, no CRC) cpio archive, the format the
// kernel unpacks as initramfs. Parent directories are created on demand.
// Archives may be concatenated: the kernel unpacks each in turn, so a cached
// base archive can be followed by a per-run payload archive. Close writes
// the trailer and must be called; it does not close the underlying writer.
type CPIOWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	rdev [2]uint32 // major, minor of the device entry being written
	err  error
}

// NewCPIOWriter returns a writer appending an archive to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, ino: 1000, dirs: map[string]bool{"": true, ".": true, "/": true}}
}

// Dir adds a directory (mode 0755 when perm is 0).
func (c *CPIOWriter) Dir(name string, perm fs.FileMode) error {
	name = cleanName(name)
	if c.dirs[name] {
		return c.err
	}
	if err := c.parents(name); err != nil {
		return err
	}
	if perm == 0 {
		perm = 0o755
	}
	c.dirs[name] = true
	return c.entry(name, 0o040000|uint32(perm.Perm()), nil)
}

// File adds a regular file with the given permission bits.
func (c *CPIOWriter) File(name string, perm fs.FileMode, data []byte) error {
	name = cleanName(name)
	if err := c.parents(name); err != nil {
		return err
	}
	return c.entry(name, 0o100000|uint32(perm.Perm()), data)
}

// Symlink adds a symbolic link name pointing at target.
func (c *CPIOWriter) Symlink(name, target string) error {
	name = cleanName(name)
	if err := c.parents(name); err != nil {
		return err
	}
	return c.entry(name, 0o120777, []byte(target))
}

// CharDev adds a character device node (e.g. dev/console, 5:1: the kernel
// opens it for /init's stdio before /init could create it).
func (c *CPIOWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	name = cleanName(name)
	if err := c.parents(name); err != nil {
		return err
	}
	c.rdev = [2]uint32{major, minor}
	defer func() { c.rdev = [2]uint32{} }()
	return c.entry(name, 0o020000|uint32(perm.Perm()), nil)
}

// Close writes the trailer entry. The writer must not be used afterwards.
func (c *CPIOWriter) Close() error {
	return c.entry("TRAILER!!!", 0, nil)
}

func (c *CPIOWriter) parents(name string) error {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return c.err
	}
	return c.Dir(dir, 0)
}

// entry writes one header, the NUL-terminated name and the data, each
// padded to 4 bytes.
func (c *CPIOWriter) entry(name string, mode uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, c.rdev[0], c.rdev[1], len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := c.w.Write(buf); err != nil {
		c.err = fmt.Errorf("writing cpio entry %s: %w", name, err)
		return c.err
	}
	if len(data) > 0 {
		if _, err := c.w.Write(data); err != nil {
			c.err = fmt.Errorf("writing cpio data %s: %w", name, err)
			return c.err
		}
		if _, err := c.w.Write(make([]byte, pad4(len(data)))); err != nil {
			c.err = fmt.Errorf("writing cpio padding %s: %w", name, err)
			return c.err
		}
	}
	return nil
}

func pad4(n int) int { return (4 - n%4) % 4 }

// cleanName turns "/usr/bin/x" into "usr/bin/x", as the kernel expects.
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}
