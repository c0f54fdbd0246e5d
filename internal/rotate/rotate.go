// Package rotate writes a line-oriented output file that is rotated by
// size, for a process that runs for days (pktfate serve's --output-file).
//
// FILE is written until the next write would take it past MaxSize; then
// FILE.Keep is removed, FILE.N becomes FILE.N+1, FILE becomes FILE.1 and a
// new FILE is begun. Files are cut only after a newline, so each holds
// whole lines (a single line longer than MaxSize gets a file of its own).
// A write that fails is never returned to the writer above (an NDJSON
// renderer would stop for good): its lines are counted as lost, the error
// is reported once through Config.Log, and the next write opens the file
// again.
package rotate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// Config says where and how to rotate.
type Config struct {
	Path string
	// MaxSize is the most bytes a file holds (at least 1).
	MaxSize int64
	// Keep is how many rotated files are kept (FILE.1 ... FILE.Keep); 0
	// keeps none: FILE begins again empty.
	Keep int
	// Log, when set, receives one message when writing starts failing and
	// one when it works again.
	Log func(msg string)
}

// Writer is a rotating file. It is safe for concurrent use; Close it.
type Writer struct {
	cfg Config

	mu        sync.Mutex
	f         *os.File
	size      int64
	failing   bool
	closed    bool
	lostLines uint64
	rotations uint64
	errs      uint64
}

// Open starts FILE afresh: one left by an earlier run is rotated away
// first (so a file never holds two runs), and creates it with mode 0600.
func Open(cfg Config) (*Writer, error) {
	if cfg.MaxSize < 1 {
		return nil, fmt.Errorf("rotating %s: the size limit must be at least 1 byte", cfg.Path)
	}
	if cfg.Keep < 0 {
		return nil, fmt.Errorf("rotating %s: the number of files to keep must not be negative", cfg.Path)
	}
	w := &Writer{cfg: cfg}
	if st, err := os.Stat(cfg.Path); err == nil && st.Size() > 0 {
		if err := w.shift(); err != nil {
			return nil, err
		}
	}
	if err := w.open(os.O_TRUNC); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open(mode int) error {
	f, err := os.OpenFile(w.cfg.Path, os.O_WRONLY|os.O_CREATE|mode, 0o600)
	if err != nil {
		return fmt.Errorf("opening output file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening output file: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// shift renames FILE to FILE.1 and so on, dropping FILE.Keep.
func (w *Writer) shift() error {
	p := w.cfg.Path
	if w.cfg.Keep == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating output file: %w", err)
		}
		return nil
	}
	name := func(i int) string { return p + "." + strconv.Itoa(i) }
	if err := os.Remove(name(w.cfg.Keep)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotating output file: %w", err)
	}
	for i := w.cfg.Keep - 1; i >= 1; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating output file: %w", err)
		}
	}
	if err := os.Rename(p, name(1)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotating output file: %w", err)
	}
	return nil
}

// rotate closes FILE, shifts the files and begins a new FILE (w.mu held).
func (w *Writer) rotate() error {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if err := w.shift(); err != nil {
		return err
	}
	w.rotations++
	return w.open(os.O_TRUNC)
}

// Write implements io.Writer. It always reports success: what could not
// be written is counted (Lost) and logged.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.lose(p, errors.New("output file closed"))
		return len(p), nil
	}
	if w.f == nil {
		if err := w.open(os.O_APPEND); err != nil {
			w.lose(p, err)
			return len(p), nil
		}
	}
	rest := p
	for len(rest) > 0 {
		room := w.cfg.MaxSize - w.size
		if int64(len(rest)) <= room {
			w.write(rest)
			break
		}
		// Cut after the last newline that fits; with none, a new file.
		cut := -1
		if room > 0 {
			cut = bytes.LastIndexByte(rest[:room], '\n')
		}
		if cut < 0 && w.size == 0 {
			// One line longer than a file: it gets a file of its own.
			if cut = bytes.IndexByte(rest, '\n'); cut < 0 {
				cut = len(rest) - 1
			}
		}
		if cut >= 0 {
			if !w.write(rest[:cut+1]) {
				w.lose(rest[cut+1:], nil)
				break
			}
			rest = rest[cut+1:]
			if len(rest) == 0 {
				break
			}
		}
		if err := w.rotate(); err != nil {
			w.lose(rest, err)
			break
		}
	}
	return len(p), nil
}

// write writes b to FILE, counting it as lost when that fails (w.mu held).
func (w *Writer) write(b []byte) bool {
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		w.lose(b[n:], err)
		w.f.Close()
		w.f = nil
		return false
	}
	if w.failing {
		w.failing = false
		w.log("output file %s written again", w.cfg.Path)
	}
	return true
}

// lose counts the lines of b as lost; err, when set, is logged once until
// writing works again (w.mu held).
func (w *Writer) lose(b []byte, err error) {
	w.lostLines += uint64(bytes.Count(b, []byte{'\n'}))
	if err == nil {
		return
	}
	w.errs++
	if !w.failing {
		w.failing = true
		w.log("writing output file: %v (its lines are counted as lost until it works again)", err)
	}
}

func (w *Writer) log(format string, args ...any) {
	if w.cfg.Log != nil {
		w.cfg.Log(fmt.Sprintf(format, args...))
	}
}

// Reopen closes FILE and opens it again, appending, or creates it when it
// was moved away (logrotate): what SIGHUP asks of a daemon's log.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("output file closed")
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	return w.open(os.O_APPEND)
}

// Stats are the writer's counters.
type Stats struct {
	// LostLines counts lines that could not be written.
	LostLines uint64
	// Rotations counts files begun because the last one was full.
	Rotations uint64
	// Errors counts failed writes, opens and rotations.
	Errors uint64
}

// Stats returns the counters so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{LostLines: w.lostLines, Rotations: w.rotations, Errors: w.errs}
}

// Close closes FILE; later writes are counted as lost.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
