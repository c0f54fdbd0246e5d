package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/tracer"
)

// rawOutput is trace --output-raw: the ebpf source writes its ring records
// into the file undecoded, and this renderer, which receives no events,
// closes the file with the capture's summary as its trailer.
type rawOutput struct {
	path   string
	f      *os.File
	w      *ringrec.RawWriter
	stderr io.Writer
	closed bool
}

// checkRaw says what --output-raw cannot be given with, and picks its
// source: the ebpf ring alone.
func checkRaw(cfg *traceConfig) error {
	if cfg.OutputRaw == "" {
		return nil
	}
	for _, o := range []struct {
		given bool
		flag  string
	}{{cfg.OutputJSON, "--output-json"}, {cfg.OutputFile != "", "--output-file"}, {cfg.OutputPcapng != "", "--output-pcapng (-w)"}, {cfg.Record != "", "--record"}} {
		if o.given {
			return usageErrorf("--output-raw writes the records undecoded, for pktfate report to render later (it writes NDJSON and lists packets): leave out %s, or --output-raw", o.flag)
		}
	}
	if slices.Equal(cfg.Sources, []string{"auto"}) {
		cfg.Sources = []string{tracer.SourceEBPF}
	}
	if !slices.Equal(cfg.Sources, []string{tracer.SourceEBPF}) {
		return usageErrorf("--output-raw records the ebpf source's ring alone, and --source %s asks for more (nf, dropmon and kmod need the live correlator): give --source ebpf, or leave out --output-raw", strings.Join(cfg.Sources, ","))
	}
	return nil
}

// openRaw creates the file and writes its header.
func openRaw(cfg traceConfig, d *tracer.Decoder, reasons map[string]bool, home uint32, stderr io.Writer) (*rawOutput, error) {
	var s traceSinks // for createOutput; rawOutput closes the file
	f, err := s.createOutput(cfg.OutputRaw, "--output-raw")
	if err != nil {
		return nil, err
	}
	core, subsys := d.Reasons.Table()
	h := ringrec.RawHeader{Pktfate: version, Kernel: kernelRelease(), Started: time.Now().UTC(),
		ClockOffset: d.Clock.Offset(), Reasons: core, Subsys: subsys, Filter: cfg.Expr, NFBlind: d.NFBlind, HomeNetns: home}
	h.Hostname, _ = os.Hostname()
	h.FilterReasons = slices.Sorted(maps.Keys(reasons)) // as parseReasons checked them
	w, err := ringrec.NewRawWriter(f, h)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("--output-raw %s: %w", cfg.OutputRaw, err)
	}
	return &rawOutput{path: cfg.OutputRaw, f: f, w: w, stderr: stderr}, nil
}

func (r *rawOutput) Event(*fate.Event) error     { return nil }
func (r *rawOutput) Fate(*fate.FateRecord) error { return nil }

// Flush does nothing: the ring's goroutine owns the writer and flushes it
// when the ring is idle.
func (r *rawOutput) Flush() error { return nil }

// Close closes the file if Summary did not (the capture never started).
func (r *rawOutput) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.f.Close()
}

// Summary writes the trailer (the sources have stopped: the writer is
// free) and says what the file holds.
func (r *rawOutput) Summary(s *fate.Summary) error {
	if r.closed {
		return nil
	}
	r.closed = true
	t := ringrec.RawTrailer{Start: s.Start, End: s.End, Lost: s.Lost, Ignored: s.Ignored, Unknowns: s.Unknowns, Notes: s.Notes, Sources: s.Sources}
	if n := r.w.Unwritten(); n > 0 || r.w.Err() != nil {
		t.Lost = append(t.Lost, fate.Loss{Observer: fate.ObserverEBPF, Name: "raw_unwritten", Value: n})
	}
	err := r.w.Close(t)
	if err == nil {
		err = r.f.Sync()
	}
	err = errors.Join(err, r.f.Close())
	if err != nil {
		// The trailer, and with it raw_unwritten, did not reach the file:
		// the count goes in the error.
		return fmt.Errorf("--output-raw %s: %w: %d records written, %d not; the file has no trailer, and pktfate report says its losses are unknown",
			r.path, err, r.w.Records(), r.w.Unwritten())
	}
	lost := "none lost"
	if n := s.TotalLost(); n > 0 {
		var parts []string
		for _, l := range s.Lost {
			if l.Value > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", l.Key(), l.Value))
			}
		}
		lost = fmt.Sprintf("%d lost (%s)", n, strings.Join(parts, ", "))
	} else if s.Completeness() == fate.CompletenessUnknown {
		lost = "whether any were lost is unknown (" + strings.Join(s.UnknownReasons(), "; ") + ")"
	}
	st, _ := os.Stat(r.path)
	size := int64(0)
	if st != nil {
		size = st.Size()
	}
	fmt.Fprintf(r.stderr, "pktfate: %d records (%.1f MB) written to %s, %s; pktfate report %s shows them\n",
		r.w.Records(), float64(size)/1e6, r.path, lost, r.path)
	return nil
}
