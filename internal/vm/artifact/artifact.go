// Package artifact carries files from tests inside the VM matrix out to the
// host over the guest's serial console, which is the only channel a guest
// has: a test writes a block of base64 lines between two marker lines, and
// the harness, which reads the console line by line, turns the block back
// into a file. The host then checks what the guests cannot (for example
// Wireshark reading a capture made on a Debian kernel).
package artifact

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const (
	begin = "=== pktfate-artifact "
	end   = "=== end pktfate-artifact"
	// lineLen is the base64 characters per console line.
	lineLen = 76
)

// Write writes data to w as an artifact block named name (a plain file
// name: no path separators).
func Write(w io.Writer, name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(begin + name + "\n")
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 0 {
		n := min(lineLen, len(enc))
		b.WriteString(enc[:n])
		b.WriteByte('\n')
		enc = enc[n:]
	}
	b.WriteString(end + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\ \t\n") {
		return fmt.Errorf("artifact name %q: want a plain file name without spaces or slashes", name)
	}
	return nil
}

// Scanner collects artifact blocks from console lines into files in Dir.
type Scanner struct {
	// Dir receives the files; it is created on the first artifact. Empty
	// discards them.
	Dir string

	name   string
	active bool
	enc    strings.Builder
	// Saved lists the files written, Errs what could not be decoded or
	// written (a block cut by the VM's end, a kernel message inside it).
	Saved []string
	Errs  []error
}

// Feed takes one console line (without its newline) and reports whether
// it belonged to an artifact block, so the caller need not print it.
func (s *Scanner) Feed(line string) bool {
	line = strings.TrimRight(line, "\r")
	switch {
	case strings.HasPrefix(line, begin):
		if s.active {
			s.Errs = append(s.Errs, fmt.Errorf("artifact %s: cut short by the next artifact", s.name))
		}
		s.name, s.active = strings.TrimPrefix(line, begin), true
		s.enc.Reset()
		return true
	case !s.active:
		return false
	case line == end:
		s.active = false
		s.save()
		return true
	}
	s.enc.WriteString(strings.TrimSpace(line))
	return true
}

// Close reports a block the console ended inside of.
func (s *Scanner) Close() {
	if s.active {
		s.active = false
		s.Errs = append(s.Errs, fmt.Errorf("artifact %s: the console ended inside it", s.name))
	}
}

func (s *Scanner) save() {
	if err := checkName(s.name); err != nil {
		s.Errs = append(s.Errs, err)
		return
	}
	data, err := base64.StdEncoding.DecodeString(s.enc.String())
	if err != nil {
		s.Errs = append(s.Errs, fmt.Errorf("artifact %s: bad base64 (a console message inside the block?): %w", s.name, err))
		return
	}
	if s.Dir == "" {
		return // the run keeps no artifacts
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		s.Errs = append(s.Errs, err)
		return
	}
	p := filepath.Join(s.Dir, s.name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		s.Errs = append(s.Errs, err)
		return
	}
	s.Saved = append(s.Saved, p)
}
