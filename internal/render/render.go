// Package render writes pktfate's events and summaries in its output
// formats: aligned text for terminals and NDJSON for programs. Renderers
// know nothing about BPF or netlink; they only see fate.Event and
// fate.Summary.
package render

import (
	"errors"

	"github.com/pktfate/pktfate/fate"
)

// Renderer writes one output format. Methods are called from one goroutine
// at a time. Flush must be called to push buffered output; Summary is the
// last call of a capture.
type Renderer interface {
	Event(e *fate.Event) error
	// Fate writes one fate record (when several observers are joined).
	Fate(r *fate.FateRecord) error
	Summary(s *fate.Summary) error
	Flush() error
}

// Multi renders to several renderers. A renderer that fails is set aside
// and the others go on: a closed stdout must not leave the pcapng file
// without its packets' end and its summary. Every call returns the errors
// of the renderers that failed in it.
type Multi struct {
	rs     []Renderer
	failed []bool
}

// NewMulti returns a Multi over rs.
func NewMulti(rs ...Renderer) *Multi { return &Multi{rs: rs, failed: make([]bool, len(rs))} }

// each calls fn on every working renderer and sets aside those that fail.
func (m *Multi) each(fn func(Renderer) error) error {
	var errs []error
	for i, r := range m.rs {
		if m.failed[i] {
			continue
		}
		if err := fn(r); err != nil {
			m.failed[i] = true
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Working reports how many renderers have not failed.
func (m *Multi) Working() int {
	n := 0
	for _, f := range m.failed {
		if !f {
			n++
		}
	}
	return n
}

// Event implements Renderer.
func (m *Multi) Event(e *fate.Event) error {
	return m.each(func(r Renderer) error { return r.Event(e) })
}

// Fate implements Renderer.
func (m *Multi) Fate(f *fate.FateRecord) error {
	return m.each(func(r Renderer) error { return r.Fate(f) })
}

// Summary implements Renderer.
func (m *Multi) Summary(s *fate.Summary) error {
	return m.each(func(r Renderer) error { return r.Summary(s) })
}

// Flush implements Renderer.
func (m *Multi) Flush() error { return m.each(func(r Renderer) error { return r.Flush() }) }
