package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pktfate/pktfate/internal/capture"
)

// statusLine keeps a live "events, drops, lost" line at the bottom of a
// terminal. Output sharing the terminal goes through wrap, which erases
// the line before writing so events never mix with it.
type statusLine struct {
	mu    sync.Mutex
	w     io.Writer
	shown bool
	ran   bool
	quit  chan struct{}
	done  chan struct{}
}

func newStatusLine(w io.Writer) *statusLine {
	return &statusLine{w: w, quit: make(chan struct{}), done: make(chan struct{})}
}

type statusWriter struct {
	s *statusLine
	w io.Writer
}

func (sw statusWriter) Write(p []byte) (int, error) {
	sw.s.mu.Lock()
	defer sw.s.mu.Unlock()
	sw.s.clearLocked()
	return sw.w.Write(p)
}

func (s *statusLine) wrap(w io.Writer) io.Writer { return statusWriter{s, w} }

func (s *statusLine) clearLocked() {
	if s.shown {
		fmt.Fprint(s.w, "\r\033[K")
		s.shown = false
	}
}

func (s *statusLine) start(stats *capture.Stats) {
	s.ran = true
	go func() {
		defer close(s.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				ev, drops, lost := stats.Snapshot()
				s.mu.Lock()
				s.clearLocked()
				fmt.Fprintf(s.w, "events %d  drops %d  lost %d  (Ctrl-C to stop)", ev, drops, lost)
				s.shown = true
				s.mu.Unlock()
			}
		}
	}()
}

func (s *statusLine) stop() {
	if !s.ran {
		return
	}
	s.ran = false
	close(s.quit)
	<-s.done
	s.mu.Lock()
	s.clearLocked()
	s.mu.Unlock()
}
