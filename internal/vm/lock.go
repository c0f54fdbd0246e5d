package vm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockCache takes an exclusive flock on the cache so that two harness runs
// (say make vmtest and go test ./internal/vm) never download or extract
// into the same folder at once. It waits for the other run, saying so.
// The returned function releases the lock.
func lockCache(c Cache, log io.Writer) (func(), error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", c.Dir, err)
	}
	f, err := os.OpenFile(filepath.Join(c.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking cache: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		logf(log, "waiting for another vmtest run to release %s", f.Name())
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking cache: %w", err)
		}
	}
	return func() { f.Close() }, nil
}
