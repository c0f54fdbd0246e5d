package metrics

import (
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pktfate/pktfate/fate"
)

// Metric names (docs/metrics.md; stable once released).
const (
	NameBuildInfo      = "pktfate_build_info"
	NameDropped        = "pktfate_packets_dropped_total"
	NameConsumed       = "pktfate_packets_consumed_total"
	NameVerdicts       = "pktfate_fate_verdicts_total"
	NameObserver       = "pktfate_observer_packets_total"
	NameLost           = "pktfate_lost_events_total"
	NameUnreadable     = "pktfate_loss_unreadable"
	NameComplete       = "pktfate_source_complete"
	NameUp             = "pktfate_source_up"
	NameLate           = "pktfate_correlator_late_records_total"
	NameSeries         = "pktfate_metric_series"
	NameSeriesLimit    = "pktfate_metric_series_limit"
	NameFolded         = "pktfate_metric_folded_total"
	NameSeriesRemoved  = "pktfate_metric_series_removed_total"
	NameNetnsScans     = "pktfate_netns_scans_total"
	correlatorObserver = "correlator"
)

// Defaults of Config.
const (
	DefaultMaxSeries   = 2000
	DefaultNetnsLinger = 5 * time.Minute
	DefaultRefresh     = 30 * time.Second
)

// Config configures Metrics.
type Config struct {
	// Version and Kernel label pktfate_build_info (pktfate's version, the
	// running kernel's release).
	Version, Kernel string
	// MaxSeries bounds the label sets of each metric with open labels
	// (default DefaultMaxSeries); see family.
	MaxSeries int
	// NetnsLinger is how long the series of a namespace that went away
	// (or was named otherwise) stay after their last packet (default
	// DefaultNetnsLinger): long enough for a few scrapes to see their
	// final value.
	NetnsLinger time.Duration
	// Refresh is how often Tick rescans the namespaces and sweeps the
	// series (default DefaultRefresh).
	Refresh time.Duration
	// Namer names namespaces (default NewNamer()).
	Namer *Namer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Metrics counts what a capture sees for Prometheus. Feed it as the
// capture's renderer and with Tick; register it with a
// prometheus.Registry. Safe for concurrent use.
type Metrics struct {
	cfg   Config
	namer *Namer

	mu         sync.Mutex
	correlated bool
	drops      *family
	consumes   *family
	verdicts   [4]uint64
	observers  map[[2]string]uint64 // {observer, status}
	losses     []fate.Loss
	lossesRead bool
	corr       *fate.CorrelatorStats
	running    []string
	notRunning []fate.SourceStatus
	attached   bool
	now        time.Time
	swept      time.Time

	buildInfo, verdictDesc, observerDesc, lostDesc, unreadableDesc, completeDesc, upDesc,
	lateDesc, seriesDesc, limitDesc, foldedDesc, removedDesc, scansDesc *prometheus.Desc
}

// New returns Metrics with cfg's defaults filled in.
func New(cfg Config) *Metrics {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.NetnsLinger <= 0 {
		cfg.NetnsLinger = DefaultNetnsLinger
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Namer == nil {
		cfg.Namer = NewNamer()
	}
	open := []string{"location", "netns", "interface"}
	m := &Metrics{cfg: cfg, namer: cfg.Namer, observers: map[[2]string]uint64{}, now: cfg.Now(),
		drops: newFamily(NameDropped, "Packets the kernel dropped, each counted once however many observers saw it, by drop reason (the running kernel's name), the function that freed it, the netfilter hook and family it was dropped in, its network namespace and interface.",
			[]string{"reason", "location", "hook", "family", "netns", "interface"}, open, cfg.MaxSeries),
		consumes: newFamily(NameConsumed, "Packets the kernel freed after processing them normally, each counted once, by the function that freed it, network namespace and interface.",
			[]string{"location", "netns", "interface"}, open, cfg.MaxSeries),
		buildInfo:      prometheus.NewDesc(NameBuildInfo, "Always 1: the pktfate version, the Go version it was built with and the running kernel's release.", []string{"version", "go_version", "kernel"}, nil),
		verdictDesc:    prometheus.NewDesc(NameVerdicts, "Packets by how far the observers agree on their fate: confirmed, single, conflict, unconfirmed (only while two or more observers run).", []string{"verdict"}, nil),
		observerDesc:   prometheus.NewDesc(NameObserver, "Each observer's part in the packets counted: saw, blind (cannot see such a packet), lost (lost events around it), missed (could have seen it and did not).", []string{"observer", "status"}, nil),
		lostDesc:       prometheus.NewDesc(NameLost, "Events an observer lost, by counter (the summary's loss ledger); a counter that cannot be read has no sample here and pktfate_loss_unreadable 1.", []string{"observer", "name"}, nil),
		unreadableDesc: prometheus.NewDesc(NameUnreadable, "1 when the loss counter could not be read at the last look (its value is unknown, so is completeness), else 0.", []string{"observer", "name"}, nil),
		completeDesc:   prometheus.NewDesc(NameComplete, "1 when every loss counter of the observer was read and is zero since pktfate started (its counts prove every packet it could see), else 0.", []string{"observer"}, nil),
		upDesc:         prometheus.NewDesc(NameUp, "1 while the source is attached and delivering; 0 for a source asked for that is not (yet) running.", []string{"observer"}, nil),
		lateDesc:       prometheus.NewDesc(NameLate, "Records begun by a sighting that came after its window had closed (a source fell behind).", nil, nil),
		seriesDesc:     prometheus.NewDesc(NameSeries, "Label sets a bounded metric holds now, folded ones included.", []string{"metric"}, nil),
		limitDesc:      prometheus.NewDesc(NameSeriesLimit, "Label sets a bounded metric keeps with their own values before new ones are folded into _overflow.", []string{"metric"}, nil),
		foldedDesc:     prometheus.NewDesc(NameFolded, "Packets counted in a series whose open labels were folded into _overflow because the metric was at its limit.", []string{"metric"}, nil),
		removedDesc:    prometheus.NewDesc(NameSeriesRemoved, "Series removed because their network namespace went away (or was named otherwise) and they were idle.", []string{"metric"}, nil),
		scansDesc:      prometheus.NewDesc(NameNetnsScans, "Scans of /run/netns and /proc made to name network namespaces.", nil, nil),
	}
	return m
}

// SetSources names the observers that will run (up once Attached) and
// the sources asked for that do not run, with why.
func (m *Metrics) SetSources(running []string, notRunning []fate.SourceStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = slices.Clone(running)
	m.notRunning = slices.Clone(notRunning)
}

// Attached says every running source is attached; with two or more
// observers packets are counted from fate records, else from events.
func (m *Metrics) Attached() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attached = true
	m.correlated = len(m.running) >= 2
}

// Detached says the sources stopped (pktfate serve is ending).
func (m *Metrics) Detached() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attached = false
}

// Event implements render.Renderer: with one observer, an event is a
// packet.
func (m *Metrics) Event(e *fate.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.correlated {
		return nil // counted from its fate record
	}
	m.count(e)
	m.observers[[2]string{e.Source, fate.StatusSaw.String()}]++
	return nil
}

// Fate implements render.Renderer: with several observers, a record is a
// packet.
func (m *Metrics) Fate(r *fate.FateRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count(r.Event)
	if int(r.Verdict) < len(m.verdicts) {
		m.verdicts[r.Verdict]++
	}
	for _, o := range r.Observers {
		if o.Status != fate.StatusNotRunning {
			m.observers[[2]string{o.Name, o.Status.String()}]++
		}
	}
	return nil
}

// count counts one packet (m.mu is held).
func (m *Metrics) count(e *fate.Event) {
	netns := m.namer.Label(e.Netns)
	switch e.Fate {
	case fate.FateDrop:
		m.drops.inc(labelValues{e.Reason, fate.Function(e.Location), e.Hook, e.Family, netns, e.Ifname}, e.Netns, m.now)
	case fate.FateConsume:
		m.consumes.inc(labelValues{fate.Function(e.Location), netns, e.Ifname}, e.Netns, m.now)
	}
}

// Summary implements render.Renderer (the summary goes elsewhere).
func (m *Metrics) Summary(*fate.Summary) error { return nil }

// Flush implements render.Renderer.
func (m *Metrics) Flush() error { return nil }

// Tick takes the ledger as the capture read it (capture.Config.OnTick),
// and every Refresh rescans the namespaces and removes the series of
// those that are gone.
func (m *Metrics) Tick(losses []fate.Loss, corr *fate.CorrelatorStats) {
	now := m.cfg.Now()
	m.mu.Lock()
	m.losses = append(m.losses[:0], losses...)
	m.lossesRead = true
	m.corr = corr
	m.now = now
	due := now.Sub(m.swept) >= m.cfg.Refresh
	m.mu.Unlock()
	if !due {
		return
	}
	m.namer.Refresh()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.swept = now
	m.drops.sweep(now, m.cfg.NetnsLinger, m.namer.Lookup)
	m.consumes.sweep(now, m.cfg.NetnsLinger, m.namer.Lookup)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.buildInfo, m.drops.desc, m.consumes.desc, m.verdictDesc, m.observerDesc,
		m.lostDesc, m.unreadableDesc, m.completeDesc, m.upDesc, m.lateDesc, m.seriesDesc, m.limitDesc, m.foldedDesc,
		m.removedDesc, m.scansDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		if mt, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...); err == nil {
			ch <- mt
		}
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		if mt, err := prometheus.NewConstMetric(d, prometheus.CounterValue, float64(v), labels...); err == nil {
			ch <- mt
		}
	}
	gauge(m.buildInfo, 1, m.cfg.Version, runtime.Version(), m.cfg.Kernel)
	counter(m.scansDesc, m.namer.Scans())
	m.drops.collect(ch)
	m.consumes.collect(ch)
	for _, f := range []*family{m.drops, m.consumes} {
		gauge(m.seriesDesc, float64(len(f.series)), f.name)
		gauge(m.limitDesc, float64(f.limit), f.name)
		counter(m.foldedDesc, f.folded, f.name)
		counter(m.removedDesc, f.removed, f.name)
	}
	if m.correlated {
		for v, n := range m.verdicts {
			counter(m.verdictDesc, n, fate.Verdict(v).String())
		}
	}
	for k, n := range m.observers {
		counter(m.observerDesc, n, k[0], k[1])
	}
	for _, o := range m.running {
		up := 0.0
		if m.attached {
			up = 1
		}
		gauge(m.upDesc, up, o)
	}
	for _, st := range m.notRunning {
		if !slices.Contains(m.running, st.Name) {
			gauge(m.upDesc, 0, st.Name)
		}
	}
	if !m.lossesRead {
		return // nothing read yet: no claim either way
	}
	ledger := m.losses
	if m.corr != nil {
		// As in the summary: a record sent out before its window closed
		// may lack sightings still on their way.
		ledger = append(slices.Clip(ledger), fate.Loss{Observer: correlatorObserver, Name: "reported_early", Value: m.corr.Forced})
		counter(m.lateDesc, m.corr.Late)
	}
	complete := map[string]bool{}
	var order []string
	for _, l := range ledger {
		if _, ok := complete[l.Observer]; !ok {
			complete[l.Observer] = true
			order = append(order, l.Observer)
		}
		unreadable := 0.0
		if l.Unknown != "" {
			unreadable = 1
			complete[l.Observer] = false
		} else {
			counter(m.lostDesc, l.Value, l.Observer, l.Name)
			if l.Value > 0 {
				complete[l.Observer] = false
			}
		}
		gauge(m.unreadableDesc, unreadable, l.Observer, l.Name)
	}
	for _, o := range order {
		v := 0.0
		if complete[o] {
			v = 1
		}
		gauge(m.completeDesc, v, o)
	}
}
