// Package capture runs one trace: it starts the sources, passes their
// events through the user-space filters and the correlator, renders them
// and builds the summary. It is the pipeline behind `pktfate trace`,
// `pktfate demo` and `pktfate check`, and it knows the sources only as
// fate.Source: no BPF, no netlink.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
	// Status lists sources that were asked for but cannot run here, for
	// the summary and the records (their observers are listed as not
	// running).
	Status []fate.SourceStatus
	// Filter is the compiled pcap-filter expression (nil: everything). It
	// runs on events the source did not filter already
	// (fate.Event.KernelFiltered).
	Filter *pcapfilter.Filter
	// Reasons, when not empty, keeps only drops with these reason names:
	// consumed packets are left out too (they have no drop reason).
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
	// FatesOnly skips rendering individual events while correlating
	// (the text output shows fates; NDJSON keeps both).
	FatesOnly bool
	// Record, when set, receives the correlator's input (fate.Recorder);
	// it is flushed at the end.
	Record *fate.Recorder
	// Window overrides the correlation window (0: the correlator's default).
	Window time.Duration
	// Log receives progress messages (nil: discarded).
	Log io.Writer
	// FlushEvery bounds how long rendered events wait in buffers.
	FlushEvery time.Duration
	// Notice, when set, receives each notice of a source (fate.Noticer)
	// once, when it is first seen: after the sources start, and at each
	// tick.
	Notice func(string)
	// Now reads the clock of the sources' events (CLOCK_MONOTONIC ns,
	// tracer.MonoNow); it drives the correlation windows.
	Now func() uint64
	// OnTick, when set, is called after every tick (FlushEvery) with the
	// loss counters just read and the correlator's statistics: a live view
	// of the ledger for a capture that never ends (pktfate serve's
	// metrics). It runs on the tick goroutine after the pipeline's lock is
	// released, so it may take its time, but it delays the next tick; it
	// must not keep Tick.Losses.
	OnTick func(Tick)
}

// Tick is what Config.OnTick receives.
type Tick struct {
	// Losses holds every loss counter of every running source, as
	// fate.Source.Losses returned it (Unknown set where it could not be
	// read).
	Losses []fate.Loss
	// Correlation is the correlator's statistics so far (its Forced
	// records are the summary's correlator reported_early loss), nil when
	// only one observer runs.
	Correlation *fate.CorrelatorStats
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
// reached or a source or the output fails, then renders the summary and
// returns it. The summary is rendered in every case once the sources were
// started, to every output that still works, saying what is unknown; the
// error tells what went wrong. Sources are closed before Run returns.
func Run(ctx context.Context, cfg Config, stats *Stats) (*fate.Summary, error) {
	if len(cfg.Sources) == 0 {
		return nil, errors.New("no event source to run")
	}
	if cfg.Now == nil {
		return nil, errors.New("capture: no clock (Config.Now)")
	}
	if cfg.FlushEvery == 0 {
		cfg.FlushEvery = 100 * time.Millisecond
	}
	if stats == nil {
		stats = &Stats{}
	}
	p := newPipeline(cfg, stats)
	defer p.closeSources()
	if err := p.start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.cancel = cancel
	if cfg.Ready != nil {
		if err := cfg.Ready(); err != nil {
			return p.finish(err)
		}
	}
	p.sum.Start = time.Now()
	if cfg.Duration > 0 {
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, cfg.Duration)
		defer c()
	}
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		t := time.NewTicker(cfg.FlushEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.tick()
			}
		}
	}()
	errs := make(chan error, len(p.started))
	for _, s := range p.started {
		go func() {
			if err := s.Run(ctx, p); err != nil {
				errs <- fmt.Errorf("source %s: %w", s.Name(), err)
				cancel()
				return
			}
			errs <- nil
		}()
	}
	var runErr error
	for range p.started {
		if err := <-errs; err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	cancel()
	<-tickDone
	return p.finish(runErr)
}

// pipeline is one capture's state between the sources and the renderer:
// handle each event, tick the clock, finish with the summary.
type pipeline struct {
	cfg     Config
	stats   *Stats
	started []fate.Source
	cancel  context.CancelFunc

	mu       sync.Mutex // serialises filtering, correlation, summary and rendering
	sum      *fate.Summary
	corr     *fate.Correlator
	sinkErr  error // the first output error: the capture stops
	done     bool  // Count reached
	lastLoss map[string]uint64
	lastTick uint64
	noticed  map[string]bool
	// noBytes counts, by observer, the packets the filter expression could
	// not judge in user space: none of their bytes arrived.
	noBytes map[string]uint64
}

func newPipeline(cfg Config, stats *Stats) *pipeline {
	return &pipeline{cfg: cfg, stats: stats, sum: fate.NewSummary(), lastLoss: map[string]uint64{}, noticed: map[string]bool{},
		noBytes: map[string]uint64{}}
}

// start starts every source; the first failure stops those started.
func (p *pipeline) start() error {
	for _, s := range p.cfg.Sources {
		if err := s.Start(); err != nil {
			s.Close()
			return fmt.Errorf("starting source %s: %w", s.Name(), err)
		}
		p.started = append(p.started, s)
	}
	var running, listed []string
	for _, s := range p.started {
		for _, o := range s.Observers() {
			running = append(running, o)
			p.sum.Sources = append(p.sum.Sources, fate.SourceStatus{Name: o, Running: true})
		}
	}
	for _, st := range p.cfg.Status {
		listed = append(listed, st.Name)
	}
	p.sum.Sources = append(p.sum.Sources, p.cfg.Status...)
	if len(running) >= 2 {
		p.corr = fate.NewCorrelator(fate.CorrelatorConfig{
			Running: running, Listed: listed, Window: p.cfg.Window, Record: p.cfg.Record, Blind: p.blind(),
		}, p.fate)
	}
	p.lastTick = p.cfg.Now()
	p.notices()
	return nil
}

// notices passes on the sources' new notices and keeps them for the
// summary (p.mu is held, or the sources are not running yet).
func (p *pipeline) notices() {
	for _, s := range p.started {
		n, ok := s.(fate.Noticer)
		if !ok {
			continue
		}
		for _, msg := range n.Notices() {
			if p.noticed[msg] {
				continue
			}
			p.noticed[msg] = true
			p.sum.Notes = append(p.sum.Notes, msg)
			if p.cfg.Notice != nil {
				p.cfg.Notice(msg)
			}
		}
	}
}

// blind asks the source of each observer why it could not have seen a
// packet.
func (p *pipeline) blind() func(string, *fate.FateRecord) string {
	by := map[string]fate.Source{}
	for _, s := range p.started {
		for _, o := range s.Observers() {
			by[o] = s
		}
	}
	return func(observer string, r *fate.FateRecord) string {
		if s, ok := by[observer]; ok {
			return s.Blind(observer, r)
		}
		return fate.KnownBlind(observer, r)
	}
}

func (p *pipeline) closeSources() {
	for _, s := range p.started {
		s.Close()
	}
}

// Event implements fate.Sink: one sighting from a source's goroutine.
func (p *pipeline) Event(e *fate.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.sinkErr != nil {
		return
	}
	if e.CopyReleased() {
		// A copy the kernel or a tap made for itself went away; the
		// packet's own fate is another free.
		p.sum.Ignored["copies_released"]++
		return
	}
	if !e.KernelFiltered && p.cfg.Filter != nil {
		if len(e.Data) == 0 && e.Len > 0 {
			// Whether it matches is not known: lost, and counted.
			p.noBytes[e.Source]++
			return
		}
		if !p.cfg.Filter.Match(e.EtherType, e.Data, e.MACHeader) {
			return
		}
	}
	if len(p.cfg.Reasons) > 0 && (e.Fate != fate.FateDrop || !p.cfg.Reasons[e.Reason]) {
		return
	}
	if p.corr != nil {
		p.sum.Events++
		p.corr.Add(e)
	} else {
		p.sum.Add(e)
	}
	p.publish()
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(e)
	}
	if p.corr == nil || !p.cfg.FatesOnly {
		if err := p.cfg.Renderer.Event(e); err != nil {
			p.fail(err)
			return
		}
	}
	if p.cfg.Count > 0 && p.sum.Events >= p.cfg.Count {
		p.done = true
		p.cancel()
	}
}

// Lost implements fate.Sink.
func (p *pipeline) Lost(observer string, from, to uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.corr != nil {
		p.corr.NoteLoss(observer, from, to)
	}
}

// fate receives each record from the correlator (p.mu is held).
func (p *pipeline) fate(r *fate.FateRecord) {
	p.sum.AddFate(r.Event)
	p.publish()
	if p.sinkErr == nil {
		if err := p.cfg.Renderer.Fate(r); err != nil {
			p.fail(err)
		}
	}
}

// fail stops the capture at the first output error (p.mu is held).
func (p *pipeline) fail(err error) {
	if p.sinkErr == nil {
		p.sinkErr = fmt.Errorf("writing output: %w", err)
		p.cancel()
	}
}

// publish copies the counts to the live stats (p.mu is held).
func (p *pipeline) publish() {
	p.stats.mu.Lock()
	p.stats.Events, p.stats.Drops = p.sum.Events, p.sum.Drops
	p.stats.mu.Unlock()
}

// tick reads the loss counters, opens loss intervals for the observers
// whose counters grew, closes correlation windows and flushes the output.
func (p *pipeline) tick() {
	// Reading the counters can take a netlink round trip (dropmon's
	// STATS_GET): not while holding up events.
	now := p.cfg.Now()
	var losses []fate.Loss
	for _, s := range p.started {
		losses = append(losses, s.Losses()...)
	}
	p.mu.Lock()
	p.notices()
	p.noteLosses(losses, now)
	var corr *fate.CorrelatorStats
	if p.corr != nil {
		p.corr.Advance(now)
		if p.cfg.OnTick != nil {
			st := p.corr.Stats()
			corr = &st
		}
	}
	var lost uint64
	for _, l := range losses {
		lost += l.Value
	}
	p.stats.mu.Lock()
	p.stats.Losses = lost
	p.stats.mu.Unlock()
	p.publish()
	if err := p.cfg.Renderer.Flush(); err != nil {
		p.fail(err)
	}
	// A recording that cannot be written stops the capture as an output
	// does (the recorder keeps its first error).
	if p.cfg.Record != nil && p.sinkErr == nil {
		if err := p.cfg.Record.Flush(); err != nil {
			p.fail(err)
		}
	}
	p.mu.Unlock()
	if p.cfg.OnTick != nil {
		p.cfg.OnTick(Tick{Losses: losses, Correlation: corr})
	}
}

// noteLosses opens a loss interval since the last tick for every observer
// whose counters grew (p.mu is held).
func (p *pipeline) noteLosses(losses []fate.Loss, now uint64) {
	for _, l := range losses {
		k := l.Key()
		if p.corr != nil && (l.Value > p.lastLoss[k] || l.Unknown != "") {
			p.corr.NoteLoss(l.Observer, p.lastTick, now)
		}
		p.lastLoss[k] = l.Value
	}
	p.lastTick = now
}

// addNoBytes puts the packets the filter could not judge in user space
// into the ledger as filter_no_bytes, added to the counter of the same
// name a source keeps for its own filter (ebpf's, in the kernel). nf's
// sightings arrive as ebpf's events: it has a counter of its own only when
// it runs alone and had some.
func (p *pipeline) addNoBytes(sum *fate.Summary, observers []string) {
	for _, o := range observers {
		n := p.noBytes[o]
		i := slices.IndexFunc(sum.Lost, func(l fate.Loss) bool { return l.Observer == o && l.Name == "filter_no_bytes" })
		switch {
		case i >= 0:
			sum.Lost[i].Value += n
		case o != fate.ObserverNF || n > 0:
			sum.Lost = append(sum.Lost, fate.Loss{Observer: o, Name: "filter_no_bytes", Value: n})
		}
	}
}

// finish flushes the correlator, renders the summary to every output that
// still works and returns it with everything that went wrong.
func (p *pipeline) finish(runErr error) (*fate.Summary, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := p.sum
	sum.End = time.Now()
	if sum.Start.IsZero() {
		sum.Start = sum.End
	}
	p.notices()
	for _, s := range p.started {
		sum.Lost = append(sum.Lost, s.Losses()...)
		if p.cfg.Filter != nil {
			p.addNoBytes(sum, s.Observers())
		}
		if in, ok := s.(fate.Informer); ok {
			for _, l := range in.Information() {
				if l.Value > 0 {
					sum.Ignored[l.Key()] += l.Value
				}
			}
		}
	}
	if p.corr != nil {
		p.noteLosses(sum.Lost, p.cfg.Now())
		p.corr.Flush()
		st := p.corr.Stats()
		sum.SetCorrelation(st)
		if st.Clones > 0 {
			// NET_DM's copies of dropped packets, freed by NET_DM itself.
			sum.Ignored["drop_monitor_clones"] = st.Clones
		}
		// A record sent out before its window closed may lack sightings
		// that were still on their way: its observers' silence proves
		// nothing, so it counts against completeness.
		sum.Lost = append(sum.Lost, fate.Loss{Observer: "correlator", Name: "reported_early", Value: st.Forced})
	}
	if runErr != nil {
		sum.Unknowns = append(sum.Unknowns, fmt.Sprintf("the capture stopped on an error: %v", runErr))
	}
	var errs []error
	errs = append(errs, runErr, p.sinkErr)
	if p.cfg.Record != nil {
		if err := p.cfg.Record.Flush(); err != nil && !errors.Is(p.sinkErr, err) {
			errs = append(errs, fmt.Errorf("writing the recording: %w", err))
		}
	}
	if err := p.cfg.Renderer.Summary(sum); err != nil && p.sinkErr == nil {
		errs = append(errs, fmt.Errorf("writing summary: %w", err))
	}
	return sum, errors.Join(errs...)
}
