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

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/kmod"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/tracer"
)

// traceConfig is everything `pktfate trace` (and `pktfate top`) was asked
// to do.
type traceConfig struct {
	Sources      []string
	OutputJSON   bool
	OutputFile   string
	OutputPcapng string
	OutputRaw    string
	Record       string
	Window       time.Duration
	Duration     time.Duration
	Count        uint64
	FilterNetns  []string
	FilterIfname string
	FilterMark   string
	FilterReason string
	FilterFate   string
	SnapLen      int
	ReadyFile    string
	// BufferKiB is the ebpf ring buffer (-B, as tcpdump's); DropmonQueue
	// NET_DM's per-CPU alert queue; KmodRate the module's events per
	// second and CPU. 0 keeps each default.
	BufferKiB    int
	DropmonQueue uint
	KmodRate     uint
	// Verbose is the number of -v (-vv is 2): 1 adds progress and why
	// each source does not run, 2 every column too.
	Verbose     int
	Wide        bool
	UTC         bool
	Numeric     bool
	ListReasons bool
	// Interval is how often `pktfate top` redraws.
	Interval time.Duration
	Expr     string

	fateGiven bool // --filter-fate was given
}

// verbosity counts -v flags; "-vv" is a flag of its own that counts two.
type verbosity struct{ n *int }

func (v verbosity) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.Itoa(*v.n)
}

func (v verbosity) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if on {
		*v.n++
	} else {
		*v.n = 0
	}
	return nil
}

func (v verbosity) IsBoolFlag() bool { return true }

// traceFlags defines the flags of trace, or of top (no outputs: top draws
// a table).
func traceFlags(cfg *traceConfig, stderr io.Writer, top bool) (*flag.FlagSet, map[string]string) {
	name := "pktfate trace"
	if top {
		name = "pktfate top"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := map[string]string{"filter-ifname": "i", "count": "c", "numeric": "n"}
	fs.Func("source", "event sources, a comma-separated `LIST`: ebpf, nf (netfilter hook attribution), dropmon (the kernel's drop monitor, NET_DM), kmod (pktfate.ko, drops inside netfilter hooks; load it first), auto = every one this kernel can run (default auto)", func(s string) error {
		cfg.Sources = strings.Split(s, ",")
		for _, src := range cfg.Sources {
			if !slices.Contains(tracer.SourceNames, src) {
				what := "not a source"
				if len(cfg.Sources) > 1 {
					what = fmt.Sprintf("%q is not a source", src)
				}
				return fmt.Errorf("%s; use %s", what, orList(tracer.SourceNames))
			}
		}
		return nil
	})
	if !top {
		fs.BoolVar(&cfg.OutputJSON, "output-json", false, "write NDJSON (one object per line) instead of text")
		fs.StringVar(&cfg.OutputFile, "output-file", "", "write events and summary to `FILE` (created with mode 0600, owned by the sudo user) instead of stdout")
		fs.StringVar(&cfg.OutputPcapng, "output-pcapng", "", "also write every packet with its fate as a comment to `FILE` (pcapng, mode 0600, owned by the sudo user; Wireshark opens it)")
		fs.StringVar(&cfg.OutputPcapng, "w", "", "")
		short["output-pcapng"] = "w"
		fs.StringVar(&cfg.OutputRaw, "output-raw", "", "write the ebpf source's records undecoded to `FILE` (mode 0600, owned by the sudo user) and nothing else: the cheapest capture, as perf record's; pktfate report FILE renders it afterwards (--source ebpf alone)")
		fs.StringVar(&cfg.Record, "record", "", "also write what the correlator received (every event with its bytes, loss intervals, clock ticks) to `FILE` as JSON lines, to reproduce a capture's correlation offline (needs two or more observers; mode 0600)")
		fs.BoolVar(&cfg.Wide, "wide", false, "text: every column (the date, source, hook family and verdict, interface index, namespace inode, mark, observers)")
	} else {
		fs.DurationVar(&cfg.Interval, "interval", time.Second, "redraw the table every `D`")
	}
	fs.DurationVar(&cfg.Window, "correlate-window", 500*time.Millisecond, "wait `D` for the other observers' sightings of a packet (drop_monitor reports from a kworker, later than eBPF), plus how far the slowest source has lately delivered behind the clock (up to 5s)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after `D` (e.g. 10s); 0 runs until Ctrl-C")
	fs.Uint64Var(&cfg.Count, "count", 0, "stop after `N` events; 0 means no limit")
	fs.Uint64Var(&cfg.Count, "c", 0, "")
	fs.Func("filter-netns", "only packets in network namespace `NS`: a name under /run/netns, an inode number or a path such as /proc/PID/ns/net; repeat it (or separate with commas) for several", func(s string) error {
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n != "" {
				cfg.FilterNetns = append(cfg.FilterNetns, n)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.FilterIfname, "filter-ifname", "", "only packets on interface `IFNAME` (resolved in --filter-netns, else the current namespace)")
	fs.StringVar(&cfg.FilterIfname, "i", "", "")
	fs.StringVar(&cfg.FilterMark, "filter-mark", "", "only packets whose skb mark matches `MARK[/MASK]` (e.g. 0x10/0xff)")
	fs.StringVar(&cfg.FilterReason, "filter-reason", "", "only drops with these `REASONS`, comma separated (e.g. NO_SOCKET,NETFILTER_DROP; any case); consumed packets are not shown")
	fs.Func("filter-fate", "which `FATE`s to trace: drop, consume or all (default all)", func(s string) error {
		s = strings.ToLower(s)
		switch s {
		case "all", "drop", "consume":
		default:
			return errors.New("use drop, consume or all")
		}
		cfg.FilterFate, cfg.fateGiven = s, true
		return nil
	})
	fs.IntVar(&cfg.SnapLen, "snaplen", 128, fmt.Sprintf("`BYTES` of each packet captured from its network header (max %d)", tracer.MaxSnapLen))
	fs.StringVar(&cfg.ReadyFile, "ready-file", "", "write `FILE` once every source is attached (for scripts)")
	bufferSize := func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4 || n > 1<<22 || n&(n-1) != 0 {
			return errors.New("use a power of two from 4 to 4194304 (KiB)")
		}
		cfg.BufferKiB = n
		return nil
	}
	fs.Func("buffer-size", fmt.Sprintf("the ebpf ring buffer in `KiB`, a power of two from 4 (default %d); what does not fit is counted as ebpf_ringbuf_full", tracer.DefaultRingBuffer>>10), bufferSize)
	fs.Func("B", "", bufferSize)
	short["buffer-size"] = "B"
	fs.UintVar(&cfg.DropmonQueue, "dropmon-queue", 0, "drop_monitor's alert queue per CPU, in `ALERTS` (default: the kernel's, 1000); what overflows it is counted as dropmon_queue_full")
	fs.UintVar(&cfg.KmodRate, "kmod-rate", 0, "the module's limit in `EVENTS` per second and CPU (default: the module's, 10000); what it refuses is counted as kmod_rate_limited")
	fs.BoolVar(&cfg.UTC, "utc", false, "print times in UTC (default: local time, as tcpdump; NDJSON is always UTC)")
	fs.BoolVar(&cfg.Numeric, "numeric", false, "print network namespaces as inode numbers, not names")
	fs.BoolVar(&cfg.Numeric, "n", false, "")
	fs.BoolVar(&cfg.ListReasons, "list-reasons", false, "list the drop reasons of the running kernel and exit")
	fs.Var(verbosity{&cfg.Verbose}, "v", "verbose: progress, the attach time, why each source does not run; -vv also every column")
	fs.BoolFunc("vv", "very verbose: -v and --wide", func(string) error { cfg.Verbose += 2; return nil })
	return fs, short
}

func parseTrace(args []string, stderr io.Writer) (traceConfig, error) {
	return parseTraceOrTop(args, stderr, false)
}

func parseTraceOrTop(args []string, stderr io.Writer, top bool) (traceConfig, error) {
	cfg := traceConfig{Sources: []string{"auto"}, FilterFate: "all"}
	fs, short := traceFlags(&cfg, stderr, top)
	fs.Usage = func() {
		if top {
			fmt.Fprintf(stderr, "Usage: pktfate top [flags] [pcap-filter expression]\n\n"+
				"A live table of drops by reason, location and netfilter hook, with rates and\n"+
				"totals, redrawn every second (like dropwatch's summary mode, and top).\n"+
				"The optional trailing expression is tcpdump's filter language (\"udp port 53\").\n\nFlags:\n")
		} else {
			fmt.Fprintf(stderr, "Usage: pktfate trace [flags] [pcap-filter expression]\n\n"+
				"Shows every packet the kernel frees: dropped (where and why) or consumed.\n"+
				"The optional trailing expression is tcpdump's filter language (\"udp port 53\").\n\nFlags:\n")
		}
		printFlags(stderr, fs, short)
	}
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	cfg.Expr = strings.Join(fs.Args(), " ")
	if cfg.Verbose >= 2 {
		cfg.Wide = true
	}
	if cfg.SnapLen < 0 || cfg.SnapLen > tracer.MaxSnapLen {
		return cfg, usageErrorf("--snaplen %d out of range: use 0 to %d", cfg.SnapLen, tracer.MaxSnapLen)
	}
	if cfg.Duration < 0 {
		return cfg, usageErrorf("--duration must not be negative")
	}
	if cfg.Window <= 0 || cfg.Window > time.Minute {
		return cfg, usageErrorf("--correlate-window %s out of range: use more than 0 and at most 1m", cfg.Window)
	}
	if top && (cfg.Interval < 100*time.Millisecond || cfg.Interval > time.Hour) {
		return cfg, usageErrorf("--interval %s out of range: use 100ms to 1h", cfg.Interval)
	}
	if cfg.FilterReason != "" && cfg.fateGiven && cfg.FilterFate != "drop" {
		return cfg, usageErrorf("--filter-reason shows drops only, and --filter-fate %s asks for consumed packets too: leave out --filter-fate, or give --filter-fate drop", cfg.FilterFate)
	}
	if cfg.FilterReason != "" {
		cfg.FilterFate = "drop"
	}
	if err := checkRaw(&cfg); err != nil {
		return cfg, err
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
		{"--output-file", cfg.OutputFile}, {"--output-pcapng", cfg.OutputPcapng}, {"--output-raw", cfg.OutputRaw},
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
	// home is the namespace text lines leave unnamed: the one traced, or
	// pktfate's own.
	home uint32
	// raw is the --output-raw file, open with its header written.
	raw *rawOutput
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
	targets, err := resolveNetnsList(cfg.FilterNetns)
	if err != nil {
		return nil, err
	}
	netnsPath := ""
	if len(targets) == 1 {
		netnsPath = targets[0].path
	}
	if cfg.FilterIfname != "" && len(targets) > 1 {
		return nil, usageErrorf("--filter-ifname %q with %d namespaces: an interface index means something only in its own namespace; give one --filter-netns", cfg.FilterIfname, len(targets))
	}
	if cfg.FilterIfname != "" && len(targets) == 1 && netnsPath == "" {
		return nil, usageErrorf("--filter-ifname %q: cannot open network namespace %d to find the interface; give --filter-netns as a name under /run/netns or a path", cfg.FilterIfname, targets[0].inode)
	}
	ifindex, err := resolveIfname(cfg.FilterIfname, netnsPath)
	if err != nil {
		return nil, err
	}
	f.Ifindex = uint32(ifindex)
	current, err := currentNetns()
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		f.Netns = append(f.Netns, t.inode)
	}
	if ifindex != 0 && len(f.Netns) == 0 {
		// An ifindex is only unique within its namespace.
		f.Netns = []uint32{current}
	}
	home := current
	if len(f.Netns) == 1 {
		home = f.Netns[0]
	}
	kernel, err := tracer.KernelBTF()
	if err != nil {
		return nil, fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	decoder, err := tracer.DefaultDecoder(kernel)
	if err != nil {
		return nil, err
	}
	reasons, err := parseReasons(cfg.FilterReason, decoder.Reasons.Names())
	if err != nil {
		return nil, err
	}
	var raw *rawOutput
	var rawWriter *ringrec.RawWriter
	if cfg.OutputRaw != "" {
		if raw, err = openRaw(cfg, decoder, reasons, home, stderr); err != nil {
			return nil, err
		}
		rawWriter = raw.w
	}
	sel, err := tracer.Select(tracer.SelectConfig{Names: cfg.Sources, Filters: f, NetnsPath: netnsPath, Raw: rawWriter,
		PcapFilter: filter.Program(), Kernel: kernel, Decoder: decoder, RingBufferSize: cfg.BufferKiB << 10,
		Dropmon: tracer.DropmonConfig{QueueLen: uint32(cfg.DropmonQueue)},
		Kmod:    tracer.KmodConfig{Enable: kmod.EnableConfig{Rate: uint32(cfg.KmodRate)}}})
	if err != nil {
		if raw != nil {
			raw.Close()
			os.Remove(cfg.OutputRaw)
		}
		return nil, err
	}
	for _, st := range sel.Status {
		fmt.Fprintf(stderr, "pktfate: %s not running: %s\n", st.Name, render.ShortReason(st.Reason))
		if cfg.Verbose > 0 {
			fmt.Fprintf(stderr, "pktfate:   %s\n", st.Reason)
		}
	}
	return &traceSetup{filter: filter, reasons: reasons, sel: sel, home: home, raw: raw}, nil
}

// newText is the text renderer as the flags ask for it.
func newText(w io.Writer, cfg traceConfig, home uint32) *render.Text {
	t := render.NewText(w)
	if cfg.UTC {
		t.Location = time.UTC
	}
	t.Wide = cfg.Wide
	t.HomeNetns = home
	if !cfg.Numeric {
		t.NetnsName = newNetnsNames().Name
	}
	return t
}

func runTrace(ctx context.Context, cfg traceConfig, stdout, stderr io.Writer) error {
	if cfg.ListReasons {
		return listReasons(stdout)
	}
	started := time.Now()
	logf := func(format string, args ...any) {
		if cfg.Verbose > 0 {
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
	var sinks *traceSinks
	if setup.raw != nil {
		sinks = &traceSinks{renderer: setup.raw, closers: []func() error{setup.raw.Close}}
		if cfg.Count > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			setup.raw.w.OnRecord = func(n uint64) {
				if n == cfg.Count {
					cancel()
				}
			}
		}
	} else if sinks, err = openSinks(cfg, observers, setup.home, stdout, stderr); err != nil {
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
		// The sources' notices go into the summary (notes); -v also
		// prints them as they come.
		Notice: func(msg string) {
			if cfg.Verbose > 0 {
				fmt.Fprintf(stderr, "pktfate: %s\n", msg)
			}
		},
		Ready: func() error {
			logf("attached in %s (observers %s)", time.Since(started).Round(time.Millisecond), strings.Join(observers, ", "))
			logAttach(logf, sel)
			if sinks.live != nil {
				sinks.live.start(stats)
			}
			return writeReady(cfg.ReadyFile)
		},
	}
	sum, err := capture.Run(ctx, ccfg, stats)
	if sinks.live != nil {
		sinks.live.stop()
	}
	err = errors.Join(err, sinks.Close())
	if closed, rest := outputClosed(err); closed && rest == nil {
		// The reader went away (| head): a stop, as tcpdump takes it.
		n := uint64(0)
		if sum != nil {
			n = sum.Events
		}
		fmt.Fprintf(stderr, "pktfate: output closed (broken pipe): stopped after %d events; the other outputs are complete\n", n)
		return nil
	} else if closed {
		return rest
	}
	return err
}

// logAttach says how the ebpf source attached (-v).
func logAttach(logf func(string, ...any), sel *tracer.Selection) {
	src := sel.EBPF
	if src == nil {
		return
	}
	logf("consume_skb location: %v", src.ConsumeLocation)
	switch {
	case src.NetfilterMethod == tracer.NetfilterLinks:
		logf("netfilter attribution: BPF netfilter links in %d network namespace(s); %d without a chain to bracket, looked at every second",
			src.NetfilterNamespaces(), src.NetfilterWaiting())
	case src.NetfilterMethod != "":
		logf("netfilter attribution: %s on nf_hook_slow (every network namespace)", src.NetfilterMethod)
	}
}

// writeReady writes the ready file, owned by the sudo user.
func writeReady(path string) error {
	if path == "" {
		return nil
	}
	_, existed := os.Lstat(path)
	if err := os.WriteFile(path, []byte("ready\n"), 0o644); err != nil {
		return fmt.Errorf("writing ready file: %w", err)
	}
	if existed != nil {
		giveToSudoUser(path)
	}
	return nil
}

// outputClosed reports whether err holds a write to a closed pipe (EPIPE),
// and returns the rest of it.
func outputClosed(err error) (bool, error) {
	if err == nil || !errors.Is(err, syscall.EPIPE) {
		return false, err
	}
	var rest []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if !errors.Is(e, syscall.EPIPE) {
			rest = append(rest, e)
		}
	}
	walk(err)
	return true, errors.Join(rest...)
}

// internalReasons are entries of enum skb_drop_reason that are no reason
// a packet is dropped for.
var internalReasons = []string{"NOT_DROPPED_YET", "CONSUMED", "MAX", "SUBSYS_MASK", "SUBSYS_SHIFT"}

// dropReasons lists the kernel's drop reasons a user can ask for.
func dropReasons(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(internalReasons, n) {
			out = append(out, n)
		}
	}
	return out
}

func listReasons(stdout io.Writer) error {
	kernel, err := tracer.KernelBTF()
	if err != nil {
		return fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	reasons, err := tracer.ReasonsFromBTF(kernel)
	if err != nil {
		return err
	}
	for _, n := range dropReasons(reasons.Names()) {
		fmt.Fprintln(stdout, n)
	}
	return nil
}

// parseReasons checks --filter-reason against the running kernel's names
// (any case, with or without SKB_DROP_REASON_). A subsystem reason
// ("SUBSYS_OPENVSWITCH:5") is taken as written.
func parseReasons(list string, known []string) (map[string]bool, error) {
	if list == "" {
		return nil, nil
	}
	names := dropReasons(known)
	out := map[string]bool{}
	for _, r := range strings.Split(list, ",") {
		r = strings.ToUpper(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(r)), "SKB_DROP_REASON_"))
		switch {
		case r == "":
			continue
		case slices.Contains(names, r):
		case strings.HasPrefix(r, "SUBSYS_") && strings.Contains(r, ":"):
		case slices.Contains(internalReasons, r):
			return nil, usageErrorf("--filter-reason %s: not a reason a packet is dropped for (an internal entry of the kernel's list); pktfate trace --list-reasons lists the drop reasons", r)
		default:
			msg := fmt.Sprintf("--filter-reason %s: no such drop reason in this kernel", r)
			if near := nearest(r, names, 3); len(near) > 0 {
				msg += "; did you mean " + orList(near) + "?"
			} else {
				msg += " (pktfate trace --list-reasons lists them)"
			}
			return nil, usageErrorf("%s", msg)
		}
		out[r] = true
	}
	return out, nil
}
