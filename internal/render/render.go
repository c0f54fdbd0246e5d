// Package render writes pktfate's events and summaries in its output
// formats: aligned text for terminals and NDJSON for programs. Renderers
// know nothing about BPF or netlink; they only see fate.Event and
// fate.Summary.
package render

import "github.com/pktfate/pktfate/fate"

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

// Multi renders to several renderers in turn, stopping at the first error.
type Multi []Renderer

// Event implements Renderer.
func (m Multi) Event(e *fate.Event) error {
	for _, r := range m {
		if err := r.Event(e); err != nil {
			return err
		}
	}
	return nil
}

// Fate implements Renderer.
func (m Multi) Fate(f *fate.FateRecord) error {
	for _, r := range m {
		if err := r.Fate(f); err != nil {
			return err
		}
	}
	return nil
}

// Summary implements Renderer.
func (m Multi) Summary(s *fate.Summary) error {
	for _, r := range m {
		if err := r.Summary(s); err != nil {
			return err
		}
	}
	return nil
}

// Flush implements Renderer.
func (m Multi) Flush() error {
	for _, r := range m {
		if err := r.Flush(); err != nil {
			return err
		}
	}
	return nil
}
