package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/metrics"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/internal/rotate"
	"github.com/pktfate/pktfate/tracer"
)

// defaultListen is where serve answers unless told otherwise: loopback, so
// nothing is exposed to the network by default (README, docs/fleet.md).
const defaultListen = "127.0.0.1:9816"

// serveConfig is everything `pktfate serve` was asked to do.
type serveConfig struct {
	Listen       string
	ListenRemote bool
	Sources      []string
	Window       time.Duration
	FilterNetns  string
	FilterIfname string
	FilterMark   string
	FilterReason string
	FilterFate   string
	SnapLen      int
	OutputFile   string
	OutputMax    int64
	OutputKeep   int
	MaxSeries    int
	NetnsLinger  time.Duration
	Verbose      bool
	Expr         string
}

func serveFlags(cfg *serveConfig, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pktfate serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", defaultListen, "serve /metrics and /healthz on `HOST:PORT` (a loopback address unless --listen-remote; port 0 picks a free one)")
	fs.BoolVar(&cfg.ListenRemote, "listen-remote", false, "allow a --listen address other hosts can reach (0.0.0.0:9816, a host's address): the metrics name namespaces, processes and interfaces")
	fs.Func("source", "event sources, comma separated: ebpf, nf, dropmon, kmod, auto = every one this kernel can run (default auto); as for pktfate trace", func(s string) error {
		cfg.Sources = strings.Split(s, ",")
		return nil
	})
	fs.DurationVar(&cfg.Window, "correlate-window", 500*time.Millisecond, "how long a packet's record waits for the other observers' sightings (as for pktfate trace)")
	fs.StringVar(&cfg.FilterNetns, "filter-netns", "", "only packets in this network namespace: inode number, name under /run/netns, or path")
	fs.StringVar(&cfg.FilterIfname, "filter-ifname", "", "only packets on this interface (resolved in --filter-netns, else the current namespace)")
	fs.StringVar(&cfg.FilterMark, "filter-mark", "", "only packets whose skb mark matches `MARK[/MASK]`")
	fs.StringVar(&cfg.FilterReason, "filter-reason", "", "only drops with these reasons, comma separated")
	fs.StringVar(&cfg.FilterFate, "filter-fate", "all", "which fates to count: drop, consume or all (drop costs least on a busy host: every delivered packet is a consume)")
	fs.IntVar(&cfg.SnapLen, "snaplen", 128, fmt.Sprintf("bytes of each packet captured from its network header, for the pcap filter and --output-file (max %d)", tracer.MaxSnapLen))
	fs.StringVar(&cfg.OutputFile, "output-file", "", "also write every event and fate record as NDJSON to `FILE` (mode 0600), rotated by size; SIGHUP reopens it")
	fs.Func("output-file-max-size", "rotate --output-file when it would pass `SIZE` bytes (K, M, G suffixes: powers of 1024; default 100M)", func(s string) error {
		v, err := parseSize(s)
		cfg.OutputMax = v
		return err
	})
	fs.IntVar(&cfg.OutputKeep, "output-file-keep", 5, "rotated files kept (FILE.1 newest ... FILE.N); 0 keeps none")
	fs.IntVar(&cfg.MaxSeries, "metrics-max-series", metrics.DefaultMaxSeries, "label sets each packet metric keeps before new ones fold into \"_overflow\" (docs/metrics.md)")
	fs.DurationVar(&cfg.NetnsLinger, "metrics-netns-linger", metrics.DefaultNetnsLinger, "how long the series of a network namespace that went away stay after its last packet")
	fs.BoolVar(&cfg.Verbose, "v", false, "verbose: print progress and the attach time")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pktfate serve [flags] [pcap-filter expression]\n\n"+
			"Runs until SIGTERM or SIGINT, counting every packet the kernel frees (the same\n"+
			"sources, filters and correlation as pktfate trace, without per-event output),\n"+
			"and serves the counts to Prometheus: /metrics (text and OpenMetrics), /healthz.\n"+
			"SIGHUP reopens --output-file and renames namespaces; it does not stop serve.\n"+
			"Metric names: docs/metrics.md; running it on many hosts: docs/fleet.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func parseServe(args []string, stderr io.Writer) (serveConfig, error) {
	cfg := serveConfig{Sources: []string{"auto"}, OutputMax: 100 << 20}
	fs := serveFlags(&cfg, stderr)
	// A bad flag is one line (realMain prints it); -h prints the usage.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return cfg, err
		}
		return cfg, usageErrorf("%v", err)
	}
	cfg.Expr = strings.Join(fs.Args(), " ")
	if err := checkListen(cfg.Listen, cfg.ListenRemote); err != nil {
		return cfg, err
	}
	if cfg.SnapLen < 0 || cfg.SnapLen > tracer.MaxSnapLen {
		return cfg, usageErrorf("--snaplen %d out of range: use 0 to %d", cfg.SnapLen, tracer.MaxSnapLen)
	}
	switch cfg.FilterFate {
	case "all", "drop", "consume":
	default:
		return cfg, usageErrorf("--filter-fate %q: use drop, consume or all", cfg.FilterFate)
	}
	if cfg.Window <= 0 || cfg.Window > time.Minute {
		return cfg, usageErrorf("--correlate-window %s out of range: use more than 0 and at most 1m", cfg.Window)
	}
	for _, s := range cfg.Sources {
		if !slices.Contains(tracer.SourceNames, s) {
			return cfg, usageErrorf("--source %q: unknown source; use %s", s, strings.Join(tracer.SourceNames, ", "))
		}
	}
	if cfg.OutputKeep < 0 {
		return cfg, usageErrorf("--output-file-keep %d: give 0 or more files", cfg.OutputKeep)
	}
	if cfg.MaxSeries < 1 {
		return cfg, usageErrorf("--metrics-max-series %d: give at least 1", cfg.MaxSeries)
	}
	if cfg.NetnsLinger <= 0 {
		return cfg, usageErrorf("--metrics-netns-linger %s: give a positive duration (e.g. 5m)", cfg.NetnsLinger)
	}
	return cfg, nil
}

// checkListen refuses an address that is not HOST:PORT with an IP (or
// localhost) and a port, and one other hosts can reach unless remote.
func checkListen(addr string, remote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageErrorf("--listen %q: want HOST:PORT, e.g. %s or [::1]:9816", addr, defaultListen)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return usageErrorf("--listen %q: the port must be a number from 0 to 65535", addr)
	}
	loopback := host == "localhost"
	if !loopback && host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return usageErrorf("--listen %q: give an IP address (or localhost), not a host name", addr)
		}
		loopback = ip.IsLoopback()
	}
	if !loopback && !remote {
		return usageErrorf("--listen %s is not a loopback address, so other hosts could read the metrics: add --listen-remote to mean it", addr)
	}
	return nil
}

// parseSize parses a byte count with an optional K, M or G suffix
// (powers of 1024; "KiB", "MB" and the like are read the same).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 1 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: give bytes, or a number with K, M or G, e.g. 100M", s)
	}
	return v * mult, nil
}

// listen opens the metrics port, before anything is attached: a port
// already taken is a one-line error, not a half-started agent.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("--listen %s: the port is already in use (another pktfate serve, or another exporter): stop it or give --listen another port: %w", addr, syscall.EADDRINUSE)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, fmt.Errorf("--listen %s: no interface of this host has that address: %w", addr, syscall.EADDRNOTAVAIL)
	case err != nil:
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	return ln, nil
}

// health is what /healthz answers: ok once every chosen source is
// attached, naming any that is not.
type health struct {
	mu         sync.Mutex
	running    []string
	notRunning []fate.SourceStatus
	attached   bool
	stopping   bool
}

func (h *health) set(f func(*health)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(h)
}

func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var b strings.Builder
	switch {
	case h.stopping:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(&b, "stopping: sources %s are being detached\n", strings.Join(h.running, ", "))
	case !h.attached:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(&b, "not attached yet: %s\n", strings.Join(h.running, ", "))
	default:
		fmt.Fprintf(&b, "ok: attached %s\n", strings.Join(h.running, ", "))
	}
	for _, st := range h.notRunning {
		fmt.Fprintf(&b, "not running (auto): %s: %s\n", st.Name, st.Reason)
	}
	io.WriteString(w, b.String())
}

// serveContext is done on SIGTERM or SIGINT, or when parent is done for
// another reason than SIGHUP: a long-running agent outlives a closed
// terminal, whatever the caller makes of the hangup.
func serveContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		pdone := parent.Done()
		for {
			select {
			case s := <-sig:
				cancel(fmt.Errorf("%v", s))
				return
			case <-pdone:
				if c := context.Cause(parent); c == nil || !strings.Contains(c.Error(), "hangup") {
					cancel(c)
					return
				}
				pdone = nil
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { signal.Stop(sig); cancel(nil) }
}

// serveRun is one pktfate serve: the metrics, the HTTP server and the
// optional event file around one capture.
type serveRun struct {
	cfg     serveConfig
	stderr  io.Writer
	metrics *metrics.Metrics
	namer   *metrics.Namer
	health  *health
	out     *rotate.Writer
	srv     *http.Server
	srvDone chan error
}

func (s *serveRun) logf(format string, args ...any) {
	fmt.Fprintf(s.stderr, "pktfate: "+format+"\n", args...)
}

// registry gathers pktfate's metrics, the Go runtime's and the process's
// (memory, CPU, descriptors: what shows a leak), and the event file's.
func (s *serveRun) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if out := s.out; out != nil {
		for _, c := range []struct {
			name, help string
			v          func(rotate.Stats) uint64
		}{
			{"pktfate_output_file_lost_lines_total", "NDJSON lines --output-file could not write (a full disk): they are not in the file.", func(st rotate.Stats) uint64 { return st.LostLines }},
			{"pktfate_output_file_rotations_total", "Files --output-file began because the last one reached --output-file-max-size.", func(st rotate.Stats) uint64 { return st.Rotations }},
			{"pktfate_output_file_errors_total", "Failed writes, opens and rotations of --output-file.", func(st rotate.Stats) uint64 { return st.Errors }},
		} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
				func() float64 { return float64(c.v(out.Stats())) }))
		}
	}
	return reg
}

func (s *serveRun) startHTTP(ln net.Listener) {
	reg := s.registry()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		EnableOpenMetrics:   true,
		ErrorHandling:       promhttp.ContinueOnError,
		ErrorLog:            log.New(s.stderr, "pktfate: metrics: ", 0),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})))
	mux.Handle("/healthz", s.health)
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "pktfate serve: /metrics (Prometheus text or OpenMetrics), /healthz\n")
	})
	// Timeouts bound what a slow or idle client holds (a goroutine and a
	// descriptor each).
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: log.New(io.Discard, "", 0)}
	s.srvDone = make(chan error, 1)
	go func() { s.srvDone <- s.srv.Serve(ln) }()
}

func (s *serveRun) stopHTTP() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.srvDone; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("stopping the metrics server: %w", err)
	}
	return nil
}

// hangups handles SIGHUP until stop is closed: the output file is opened
// again (after logrotate moved it) and namespaces are renamed.
func (s *serveRun) hangups(stop <-chan struct{}) (done <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	d := make(chan struct{})
	go func() {
		defer close(d)
		defer signal.Stop(hup)
		for {
			select {
			case <-stop:
				return
			case <-hup:
				s.namer.Refresh()
				if s.out == nil {
					s.logf("SIGHUP: network namespaces renamed")
					continue
				}
				if err := s.out.Reopen(); err != nil {
					s.logf("SIGHUP: reopening %s: %v", s.cfg.OutputFile, err)
				} else {
					s.logf("SIGHUP: reopened %s, network namespaces renamed", s.cfg.OutputFile)
				}
			}
		}
	}()
	return d
}

func runServe(parent context.Context, cfg serveConfig, stderr io.Writer) error {
	started := time.Now()
	s := &serveRun{cfg: cfg, stderr: stderr, namer: metrics.NewNamer(), health: &health{}}
	// Everything that can be refused is checked before anything is
	// attached: the port, the filters and the kernel, the output file.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	var netnsList []string
	if cfg.FilterNetns != "" {
		netnsList = strings.Split(cfg.FilterNetns, ",")
	}
	verbose := 0
	if cfg.Verbose {
		verbose = 1
	}
	setup, err := prepareTrace(traceConfig{
		Sources: cfg.Sources, Window: cfg.Window, FilterNetns: netnsList, FilterIfname: cfg.FilterIfname,
		FilterMark: cfg.FilterMark, FilterReason: cfg.FilterReason, FilterFate: cfg.FilterFate,
		SnapLen: cfg.SnapLen, Verbose: verbose, Expr: cfg.Expr,
	}, stderr)
	if err != nil {
		return err
	}
	sel := setup.sel
	observers := sel.Observers()
	var renderer render.Renderer
	if cfg.OutputFile != "" {
		s.out, err = rotate.Open(rotate.Config{Path: cfg.OutputFile, MaxSize: cfg.OutputMax, Keep: cfg.OutputKeep,
			Log: func(msg string) { s.logf("%s", msg) }})
		if err != nil {
			return err
		}
		defer s.out.Close()
	}
	s.metrics = metrics.New(metrics.Config{Version: version, Kernel: kernelRelease(), MaxSeries: cfg.MaxSeries,
		NetnsLinger: cfg.NetnsLinger, Namer: s.namer})
	s.metrics.SetSources(observers, sel.Status)
	s.health.set(func(h *health) { h.running, h.notRunning = observers, sel.Status })
	renderer = s.metrics
	if s.out != nil {
		renderer = render.NewMulti(s.metrics, render.NewNDJSON(s.out))
	}
	ctx, stop := serveContext(parent)
	defer stop()
	s.startHTTP(ln)
	s.logf("serving http://%s/metrics and /healthz (observers %s)", ln.Addr(), strings.Join(observers, ", "))
	hupStop := make(chan struct{})
	hupDone := s.hangups(hupStop)
	stats := &capture.Stats{}
	sum, runErr := capture.Run(ctx, capture.Config{
		Now:       tracer.MonoNow,
		Sources:   sel.Sources,
		Status:    sel.Status,
		Window:    cfg.Window,
		FatesOnly: s.out == nil,
		Filter:    setup.filter,
		Reasons:   setup.reasons,
		Renderer:  renderer,
		OnTick:    func(t capture.Tick) { s.metrics.Tick(t.Losses, t.Correlation) },
		Notice:    func(msg string) { s.logf("%s", msg) },
		Ready: func() error {
			s.metrics.Attached()
			s.health.set(func(h *health) { h.attached = true })
			if cfg.Verbose {
				s.logf("attached in %s", time.Since(started).Round(time.Millisecond))
			}
			return nil
		},
	}, stats)
	s.metrics.Detached()
	s.health.set(func(h *health) { h.stopping = true })
	close(hupStop)
	<-hupDone
	errs := []error{runErr, s.stopHTTP()}
	if s.out != nil {
		errs = append(errs, s.out.Close())
	}
	if sum != nil {
		s.logf("stopped after %s: %d packets (%d drops, %d consumed), %s", time.Since(started).Round(time.Second),
			sum.Fates, sum.Drops, sum.Consumed, sum.Completeness())
	}
	return errors.Join(errs...)
}
