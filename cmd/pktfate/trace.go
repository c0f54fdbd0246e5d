package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/term"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/tracer"
)

// traceConfig is everything `pktfate trace` was asked to do.
type traceConfig struct {
	Sources      []string
	OutputJSON   bool
	OutputFile   string
	OutputPcapng string
	Record       string
	Window       time.Duration
	Duration     time.Duration
	Count        uint64
	FilterNetns  string
	FilterIfname string
	FilterMark   string
	FilterReason string
	FilterFate   string
	SnapLen      int
	ReadyFile    string
	Verbose      bool
	Expr         string
}

func traceFlags(cfg *traceConfig, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pktfate trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Func("source", "event sources, comma separated: ebpf, nf (netfilter hook attribution), dropmon (the kernel's drop monitor, NET_DM), kmod (pktfate.ko, drops inside netfilter hooks; load it first), auto = every one this kernel can run (default auto)", func(s string) error {
		cfg.Sources = strings.Split(s, ",")
		return nil
	})
	fs.BoolVar(&cfg.OutputJSON, "output-json", false, "write NDJSON (one object per line) instead of text")
	fs.StringVar(&cfg.OutputFile, "output-file", "", "write events and summary to `FILE` (created with mode 0600) instead of stdout")
	fs.StringVar(&cfg.OutputPcapng, "output-pcapng", "", "also write every packet with its fate as a comment to `FILE` (pcapng, mode 0600; Wireshark opens it)")
	fs.StringVar(&cfg.Record, "record", "", "also write what the correlator received (every event with its bytes, loss intervals, clock ticks) to `FILE` as JSON lines, to reproduce a capture's correlation offline (needs two or more observers; mode 0600)")
	fs.DurationVar(&cfg.Window, "correlate-window", 500*time.Millisecond, "how long a packet's record waits for the other observers' sightings (drop_monitor reports from a kworker, later than eBPF), plus how far the slowest source has lately delivered behind the clock (up to 5s)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (e.g. 10s); 0 runs until Ctrl-C")
	fs.Uint64Var(&cfg.Count, "count", 0, "stop after this many events; 0 means no limit")
	fs.StringVar(&cfg.FilterNetns, "filter-netns", "", "only packets in this network namespace: inode number, name under /run/netns, or path")
	fs.StringVar(&cfg.FilterIfname, "filter-ifname", "", "only packets on this interface (resolved in --filter-netns, else the current namespace)")
	fs.StringVar(&cfg.FilterMark, "filter-mark", "", "only packets whose skb mark matches `MARK[/MASK]` (e.g. 0x10/0xff)")
	fs.StringVar(&cfg.FilterReason, "filter-reason", "", "only drops with these reasons, comma separated (e.g. NO_SOCKET,NETFILTER_DROP)")
	fs.StringVar(&cfg.FilterFate, "filter-fate", "all", "which fates to trace: drop, consume or all")
	fs.IntVar(&cfg.SnapLen, "snaplen", 128, fmt.Sprintf("bytes of each packet captured from its network header (max %d)", tracer.MaxSnapLen))
	fs.StringVar(&cfg.ReadyFile, "ready-file", "", "write `FILE` once every source is attached (for scripts)")
	fs.BoolVar(&cfg.Verbose, "v", false, "verbose: print progress and the attach time")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pktfate trace [flags] [pcap-filter expression]\n\n"+
			"Shows every packet the kernel frees: dropped (where and why) or consumed.\n"+
			"The optional trailing expression is tcpdump's filter language (\"udp port 53\").\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func parseTrace(args []string, stderr io.Writer) (traceConfig, error) {
	cfg := traceConfig{Sources: []string{"auto"}}
	fs := traceFlags(&cfg, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, usageErrorf("%v", err)
	}
	cfg.Expr = strings.Join(fs.Args(), " ")
	if cfg.SnapLen < 0 || cfg.SnapLen > tracer.MaxSnapLen {
		return cfg, usageErrorf("--snaplen %d out of range: use 0 to %d", cfg.SnapLen, tracer.MaxSnapLen)
	}
	switch cfg.FilterFate {
	case "all", "drop", "consume":
	default:
		return cfg, usageErrorf("--filter-fate %q: use drop, consume or all", cfg.FilterFate)
	}
	if cfg.Duration < 0 {
		return cfg, usageErrorf("--duration must not be negative")
	}
	if cfg.Window <= 0 || cfg.Window > time.Minute {
		return cfg, usageErrorf("--correlate-window %s out of range: use more than 0 and at most 1m", cfg.Window)
	}
	for _, s := range cfg.Sources {
		if !slices.Contains(tracer.SourceNames, s) {
			return cfg, usageErrorf("--source %q: unknown source; use %s", s, strings.Join(tracer.SourceNames, ", "))
		}
	}
	if err := distinctOutputs(cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// distinctOutputs refuses two outputs that name one file: both would
// write into it, and neither would be readable.
func distinctOutputs(cfg traceConfig) error {
	seen := map[string]string{}
	for _, o := range []struct{ flag, path string }{
		{"--output-file", cfg.OutputFile}, {"--output-pcapng", cfg.OutputPcapng},
		{"--record", cfg.Record}, {"--ready-file", cfg.ReadyFile},
	} {
		if o.path == "" || o.path == "-" {
			continue
		}
		key := filepath.Clean(o.path)
		if abs, err := filepath.Abs(o.path); err == nil {
			key = abs
		}
		if st, err := os.Stat(o.path); err == nil {
			if ino, ok := st.Sys().(*syscall.Stat_t); ok {
				key = fmt.Sprintf("inode %d:%d", ino.Dev, ino.Ino)
			}
		}
		if prev, ok := seen[key]; ok {
			return usageErrorf("%s and %s name the same file %s: give each output a file of its own", prev, o.flag, o.path)
		}
		seen[key] = o.flag
	}
	return nil
}

// parseMark parses "MARK" or "MARK/MASK" (decimal or 0x hex).
func parseMark(s string) (mark, mask uint32, err error) {
	if s == "" {
		return 0, 0, nil
	}
	m, k, hasMask := strings.Cut(s, "/")
	mv, err := strconv.ParseUint(m, 0, 32)
	if err != nil {
		return 0, 0, usageErrorf("--filter-mark %q: want MARK or MARK/MASK, e.g. 0x10/0xff", s)
	}
	kv := uint64(0xffffffff)
	if hasMask {
		kv, err = strconv.ParseUint(k, 0, 32)
		if err != nil || kv == 0 {
			return 0, 0, usageErrorf("--filter-mark %q: the mask must be a non-zero number", s)
		}
	}
	return uint32(mv) & uint32(kv), uint32(kv), nil
}

// traceSetup is what runTrace resolved from the flags before attaching
// anything: the filters, the kernel's names, the sources.
type traceSetup struct {
	filter  *pcapfilter.Filter
	reasons map[string]bool
	sel     *tracer.Selection
}

// prepareTrace checks everything the user typed and chooses the sources,
// before anything is attached.
func prepareTrace(cfg traceConfig, stderr io.Writer) (*traceSetup, error) {
	filter, err := pcapfilter.Compile(cfg.Expr)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	f := fate.Filters{SnapLen: cfg.SnapLen, Drops: cfg.FilterFate != "consume", Consumes: cfg.FilterFate != "drop"}
	if f.Mark, f.MarkMask, err = parseMark(cfg.FilterMark); err != nil {
		return nil, err
	}
	netnsInode, netnsPath, err := resolveNetns(cfg.FilterNetns)
	if err != nil {
		return nil, err
	}
	if cfg.FilterIfname != "" && netnsInode != 0 && netnsPath == "" {
		return nil, usageErrorf("--filter-ifname %q: cannot open network namespace %d to find the interface; give --filter-netns as a name under /run/netns or a path", cfg.FilterIfname, netnsInode)
	}
	ifindex, err := resolveIfname(cfg.FilterIfname, netnsPath)
	if err != nil {
		return nil, err
	}
	f.Ifindex = uint32(ifindex)
	if ifindex != 0 && netnsInode == 0 {
		// An ifindex is only unique within its namespace.
		if netnsInode, err = currentNetns(); err != nil {
			return nil, err
		}
	}
	if netnsInode != 0 {
		f.Netns = []uint32{netnsInode}
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	decoder, err := tracer.DefaultDecoder(kernel)
	if err != nil {
		return nil, err
	}
	reasons, err := parseReasons(cfg.FilterReason, decoder.Reasons)
	if err != nil {
		return nil, err
	}
	sel, err := tracer.Select(tracer.SelectConfig{Names: cfg.Sources, Filters: f, NetnsPath: netnsPath,
		PcapFilter: filter.Program(), Kernel: kernel, Decoder: decoder})
	if err != nil {
		return nil, err
	}
	for _, st := range sel.Status {
		fmt.Fprintf(stderr, "pktfate: source %s not running: %s\n", st.Name, st.Reason)
	}
	return &traceSetup{filter: filter, reasons: reasons, sel: sel}, nil
}

// traceSinks are the outputs of one trace: the renderer (text or NDJSON,
// and the pcapng beside it), the recording and the live status line.
type traceSinks struct {
	renderer render.Renderer
	rec      *fate.Recorder
	live     *statusLine
	closers  []func() error
}

// Close closes every file opened.
func (s *traceSinks) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// createOutput creates an output file (mode 0600).
func (s *traceSinks) createOutput(path, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s not writable: %w", what, err)
	}
	s.closers = append(s.closers, f.Close)
	return f, nil
}

// openSinks opens every output the flags ask for.
func openSinks(cfg traceConfig, observers []string, stdout, stderr io.Writer) (*traceSinks, error) {
	s := &traceSinks{}
	out := stdout
	if cfg.OutputFile != "" && cfg.OutputFile != "-" {
		f, err := s.createOutput(cfg.OutputFile, "output file")
		if err != nil {
			return nil, err
		}
		out = f
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !cfg.Verbose {
		s.live = newStatusLine(stderr)
		if out == stdout {
			out = s.live.wrap(out)
		}
	}
	if cfg.OutputJSON {
		s.renderer = render.NewNDJSON(out)
	} else {
		s.renderer = render.NewText(out)
	}
	if cfg.OutputPcapng != "" {
		pf, err := s.createOutput(cfg.OutputPcapng, "pcapng output file")
		if err != nil {
			s.Close()
			return nil, err
		}
		pr, err := render.NewPcapng(pf, "pktfate "+version)
		if err != nil {
			s.Close()
			return nil, err
		}
		pr.Correlated = len(observers) >= 2
		s.renderer = render.NewMulti(s.renderer, pr)
	}
	if cfg.Record != "" {
		if len(observers) < 2 {
			s.Close()
			return nil, fmt.Errorf("--record writes the correlator's input, and only one observer runs (%s): add a source with --source", strings.Join(observers, ","))
		}
		rf, err := s.createOutput(cfg.Record, "recording file")
		if err != nil {
			s.Close()
			return nil, err
		}
		s.rec = fate.NewRecorder(rf)
	}
	return s, nil
}

func runTrace(ctx context.Context, cfg traceConfig, stdout, stderr io.Writer) error {
	started := time.Now()
	logf := func(format string, args ...any) {
		if cfg.Verbose {
			fmt.Fprintf(stderr, "pktfate: "+format+"\n", args...)
		}
	}
	if cfg.ReadyFile != "" {
		// A ready file left by an earlier run must not announce this one.
		if err := os.Remove(cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the old ready file: %w", err)
		}
	}
	setup, err := prepareTrace(cfg, stderr)
	if err != nil {
		return err
	}
	sel := setup.sel
	observers := sel.Observers()
	sinks, err := openSinks(cfg, observers, stdout, stderr)
	if err != nil {
		return err
	}
	defer sinks.Close()
	stats := &capture.Stats{}
	ccfg := capture.Config{
		Now:       tracer.MonoNow,
		Sources:   sel.Sources,
		Status:    sel.Status,
		Window:    cfg.Window,
		Record:    sinks.rec,
		FatesOnly: !cfg.OutputJSON,
		Filter:    setup.filter,
		Reasons:   setup.reasons,
		Count:     cfg.Count,
		Duration:  cfg.Duration,
		Renderer:  sinks.renderer,
		Notice:    func(msg string) { fmt.Fprintf(stderr, "pktfate: %s\n", msg) },
		Ready: func() error {
			logf("attached in %s (observers %s)", time.Since(started).Round(time.Millisecond), strings.Join(observers, ", "))
			if src := sel.EBPF; src != nil {
				logf("consume_skb location: %v", src.ConsumeLocation)
				switch {
				case src.NetfilterMethod == tracer.NetfilterLinks:
					logf("netfilter attribution: BPF netfilter links in %d network namespace(s)", src.NetfilterNamespaces())
				case src.NetfilterMethod != "":
					logf("netfilter attribution: %s on nf_hook_slow (every network namespace)", src.NetfilterMethod)
				}
			}
			if sinks.live != nil {
				sinks.live.start(stats)
			}
			if cfg.ReadyFile != "" {
				if err := os.WriteFile(cfg.ReadyFile, []byte("ready\n"), 0o644); err != nil {
					return fmt.Errorf("writing ready file: %w", err)
				}
			}
			return nil
		},
	}
	_, err = capture.Run(ctx, ccfg, stats)
	if sinks.live != nil {
		sinks.live.stop()
	}
	return errors.Join(err, sinks.Close())
}

func parseReasons(list string, known *tracer.Reasons) (map[string]bool, error) {
	if list == "" {
		return nil, nil
	}
	names := known.Names()
	out := map[string]bool{}
	for _, r := range strings.Split(list, ",") {
		r = strings.ToUpper(strings.TrimPrefix(strings.TrimSpace(r), "SKB_DROP_REASON_"))
		if r == "" {
			continue
		}
		if !slices.Contains(names, r) {
			return nil, usageErrorf("--filter-reason: this kernel has no drop reason %q (it has: %s)", r, strings.Join(names, ", "))
		}
		out[r] = true
	}
	return out, nil
}
