// Package capture runs one trace: it starts the sources, passes their
// events through the user-space filters, renders them and builds the
// summary. It is the pipeline behind `pktfate trace` and `pktfate demo`.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
)

// Config describes one capture.
type Config struct {
	// Sources to run; every one must start.
	Sources []fate.Source
	// Status lists observers that are not Sources of their own (such as
	// the netfilter attribution inside the ebpf source) and sources that
	// were asked for but cannot run here, for the summary.
	Status []fate.SourceStatus
	// Filter is the compiled pcap-filter expression (nil: everything).
	Filter *pcapfilter.Filter
	// Reasons keeps only drops with these reason names (empty: all);
	// consumed packets pass when KeepConsumes is set.
	Reasons map[string]bool
	// Count stops the capture after this many events (0: no limit).
	Count uint64
	// Duration stops the capture after this long (0: no limit).
	Duration time.Duration
	// Renderer receives every event and the summary.
	Renderer render.Renderer
	// Ready is called once every source is attached.
	Ready func() error
	// OnEvent, when set, sees each event after filtering (for the demo and
	// the live status line); it must not keep the pointer.
	OnEvent func(*fate.Event)
	// Observers names every observer running: source names, plus "nf"
	// when the ebpf source attributes netfilter drops. With two or more,
	// their sightings are joined into fate records (fate.Correlator),
	// rendered with Renderer.Fate, and the summary counts packets.
	Observers []string
	// FatesOnly skips rendering individual events while correlating
	// (the text output shows fates; NDJSON keeps both).
	FatesOnly bool
	// NFCovers says where the nf observer can see (fate.CorrelatorConfig);
	// nil: everywhere.
	NFCovers func(netns uint32, mono uint64) bool
	// Record, when set, receives the correlator's input (fate.Recorder);
	// it is flushed at the end.
	Record *fate.Recorder
	// Window overrides the correlation window (0: the correlator's default).
	Window time.Duration
	// Log receives progress messages (nil: discarded).
	Log io.Writer
	// FlushEvery bounds how long rendered events wait in buffers.
	FlushEvery time.Duration
	// Now reads the clock of the sources' events (CLOCK_MONOTONIC ns,
	// tracer.MonoNow); it drives the correlation windows.
	Now func() uint64
}

// Stats are live counters, safe to read while the capture runs.
type Stats struct {
	mu                    sync.Mutex
	Events, Drops, Losses uint64
}

// Snapshot returns the current counts.
func (s *Stats) Snapshot() (events, drops, lost uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Events, s.Drops, s.Losses
}

// Run starts the sources, captures until ctx is done, Count or Duration is
// reached, then renders the summary and returns it. Sources are closed
// before it returns.
func Run(ctx context.Context, cfg Config, stats *Stats) (*fate.Summary, error) {
	if len(cfg.Sources) == 0 {
		return nil, errors.New("no event source to run")
	}
	if stats == nil {
		stats = &Stats{}
	}
	if cfg.Now == nil {
		return nil, errors.New("capture: no clock (Config.Now)")
	}
	if cfg.FlushEvery == 0 {
		cfg.FlushEvery = 100 * time.Millisecond
	}
	sum := fate.NewSummary()
	started := make([]fate.Source, 0, len(cfg.Sources))
	defer func() {
		for _, s := range started {
			s.Close()
		}
	}()
	for _, s := range cfg.Sources {
		if err := s.Start(); err != nil {
			s.Close()
			return nil, fmt.Errorf("starting source %s: %w", s.Name(), err)
		}
		started = append(started, s)
		sum.Sources = append(sum.Sources, fate.SourceStatus{Name: s.Name(), Running: true})
	}
	sum.Sources = append(sum.Sources, cfg.Status...)
	if cfg.Ready != nil {
		if err := cfg.Ready(); err != nil {
			return nil, err
		}
	}
	sum.Start = time.Now()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, cfg.Duration)
		defer c()
	}

	var (
		mu        sync.Mutex // serialises filtering, correlation, summary and rendering
		renderErr error
		done      bool
		corr      *fate.Correlator
	)
	if len(cfg.Observers) >= 2 {
		running := map[string]bool{}
		for _, o := range cfg.Observers {
			running[o] = true
		}
		corr = fate.NewCorrelator(fate.CorrelatorConfig{Running: running, Window: cfg.Window, NFCovers: cfg.NFCovers, Record: cfg.Record}, func(r *fate.FateRecord) {
			sum.AddFate(r.Event)
			if renderErr == nil {
				if err := cfg.Renderer.Fate(r); err != nil {
					renderErr = fmt.Errorf("writing output: %w", err)
					cancel()
				}
			}
		})
	}
	handle := func(e *fate.Event) {
		mu.Lock()
		defer mu.Unlock()
		if done || renderErr != nil {
			return
		}
		if !cfg.Filter.Match(e.EtherType, e.Data, e.MACHeader) {
			return
		}
		if len(cfg.Reasons) > 0 && e.Fate == fate.FateDrop && !cfg.Reasons[e.Reason] {
			return
		}
		if corr != nil {
			sum.Events++
			corr.Add(e)
		} else {
			sum.Add(e)
		}
		stats.mu.Lock()
		stats.Events, stats.Drops = sum.Events, sum.Drops
		stats.mu.Unlock()
		if cfg.OnEvent != nil {
			cfg.OnEvent(e)
		}
		if corr == nil || !cfg.FatesOnly {
			if err := cfg.Renderer.Event(e); err != nil {
				renderErr = fmt.Errorf("writing output: %w", err)
				cancel()
				return
			}
		}
		if cfg.Count > 0 && sum.Events >= cfg.Count {
			done = true
			cancel()
		}
	}

	// Flush rendered output, refresh loss counters and close correlation
	// windows periodically.
	lastLoss := map[string]uint64{}
	lastTick := cfg.Now()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(cfg.FlushEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// Reading the counters can take a netlink round trip
				// (dropmon's STATS_GET): not while holding up events.
				now := cfg.Now()
				var counters []fate.Counter
				for _, s := range started {
					counters = append(counters, s.Losses()...)
				}
				var lost uint64
				mu.Lock()
				for _, c := range counters {
					lost += c.Value
					if corr != nil && c.Value > lastLoss[c.Name] {
						corr.NoteLoss(fate.ObserverOf(c.Name), lastTick, now)
					}
					lastLoss[c.Name] = c.Value
				}
				lastTick = now
				if corr != nil {
					corr.Advance(now)
				}
				stats.mu.Lock()
				stats.Losses = lost
				stats.mu.Unlock()
				if err := cfg.Renderer.Flush(); err != nil && renderErr == nil {
					renderErr = fmt.Errorf("writing output: %w", err)
					cancel()
				}
				mu.Unlock()
			}
		}
	}()

	errs := make(chan error, len(started))
	for _, s := range started {
		go func() {
			if err := s.Run(ctx, handle); err != nil {
				errs <- fmt.Errorf("source %s: %w", s.Name(), err)
				cancel()
				return
			}
			errs <- nil
		}()
	}
	var runErr error
	for range started {
		if err := <-errs; err != nil && runErr == nil {
			runErr = err
		}
	}
	cancel()
	<-flushDone

	sum.End = time.Now()
	for _, s := range started {
		sum.Lost = append(sum.Lost, s.Losses()...)
	}
	if corr != nil {
		mu.Lock()
		for _, c := range sum.Lost {
			if c.Value > lastLoss[c.Name] {
				corr.NoteLoss(fate.ObserverOf(c.Name), lastTick, cfg.Now())
			}
		}
		corr.Flush()
		mu.Unlock()
		st := corr.Stats()
		sum.SetCorrelation(cfg.Observers, st)
		if st.Clones > 0 {
			// NET_DM's copies of dropped packets, freed by NET_DM itself.
			sum.Ignored["drop_monitor_clones"] = st.Clones
		}
	}
	if runErr != nil {
		return sum, runErr
	}
	if renderErr != nil {
		return sum, renderErr
	}
	if cfg.Record != nil {
		if err := cfg.Record.Flush(); err != nil {
			return sum, fmt.Errorf("writing the recording: %w", err)
		}
	}
	if err := cfg.Renderer.Summary(sum); err != nil {
		return sum, fmt.Errorf("writing summary: %w", err)
	}
	return sum, nil
}
