package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/term"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/kmod"
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
		switch s {
		case "auto", "ebpf", "nf", "dropmon", "kmod":
		default:
			return cfg, usageErrorf("--source %q: unknown source; use ebpf, nf, dropmon, kmod or auto", s)
		}
	}
	return cfg, nil
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

// openOutput opens where events go: stdout or a new file (mode 0600).
func openOutput(cfg traceConfig, stdout io.Writer) (io.Writer, func() error, error) {
	if cfg.OutputFile == "" || cfg.OutputFile == "-" {
		return stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(cfg.OutputFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("output file not writable: %w", err)
	}
	return f, f.Close, nil
}

func runTrace(ctx context.Context, cfg traceConfig, stdout, stderr io.Writer) error {
	started := time.Now()
	logf := func(format string, args ...any) {
		if cfg.Verbose {
			fmt.Fprintf(stderr, "pktfate: "+format+"\n", args...)
		}
	}
	// Everything the user typed is checked before anything is attached.
	filter, err := pcapfilter.Compile(cfg.Expr)
	if err != nil {
		return usageErrorf("%v", err)
	}
	mark, mask, err := parseMark(cfg.FilterMark)
	if err != nil {
		return err
	}
	netnsInode, netnsPath, err := resolveNetns(cfg.FilterNetns)
	if err != nil {
		return err
	}
	if cfg.FilterIfname != "" && netnsInode != 0 && netnsPath == "" {
		return usageErrorf("--filter-ifname %q: cannot open network namespace %d to find the interface; give --filter-netns as a name under /run/netns or a path", cfg.FilterIfname, netnsInode)
	}
	ifindex, err := resolveIfname(cfg.FilterIfname, netnsPath)
	if err != nil {
		return err
	}
	if ifindex != 0 && netnsInode == 0 {
		// An ifindex is only unique within its namespace.
		netnsInode, err = currentNetns()
		if err != nil {
			return err
		}
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	ecfg := tracer.EBPFConfig{
		SnapLen:        cfg.SnapLen,
		Drops:          cfg.FilterFate != "consume",
		Consumes:       cfg.FilterFate != "drop",
		FilterNetns:    netnsInode,
		FilterIfindex:  uint32(ifindex),
		FilterMark:     mark,
		FilterMarkMask: mask,
		Kernel:         kernel,
	}
	if err := tracer.NewEBPF(ecfg).CanRun(); err != nil {
		return fmt.Errorf("source ebpf cannot run: %w", err)
	}
	decoder, err := tracer.DefaultDecoder(kernel)
	if err != nil {
		return err
	}
	if decoder.Symbols == nil {
		fmt.Fprintln(stderr, "pktfate: warning: /proc/kallsyms is not readable (needs CAP_SYSLOG); locations are shown as addresses")
	}
	reasons, err := parseReasons(cfg.FilterReason, decoder.Reasons)
	if err != nil {
		return err
	}
	ecfg.Decoder = decoder
	status, err := chooseNetfilter(cfg.Sources, &ecfg, netnsInode, netnsPath)
	if err != nil {
		return err
	}
	for _, st := range status {
		if !st.Running {
			fmt.Fprintf(stderr, "pktfate: source %s not running: %s\n", st.Name, st.Reason)
		}
	}
	src := tracer.NewEBPF(ecfg)
	sources := []fate.Source{src}
	dm, dmStatus, err := chooseDropmon(cfg, decoder, netnsInode != 0 || ifindex != 0 || mask != 0)
	if err != nil {
		return err
	}
	if dm != nil {
		sources = append(sources, dm)
	}
	for _, st := range dmStatus {
		if !st.Running {
			fmt.Fprintf(stderr, "pktfate: source %s not running: %s\n", st.Name, st.Reason)
		}
	}
	status = append(status, dmStatus...)
	km, kmStatus, err := chooseKmod(cfg, decoder, netnsInode, mark, mask, ifindex != 0)
	if err != nil {
		return err
	}
	if km != nil {
		sources = append(sources, km)
	}
	for _, st := range kmStatus {
		fmt.Fprintf(stderr, "pktfate: source %s not running: %s\n", st.Name, st.Reason)
	}
	status = append(status, kmStatus...)

	out, closeOut, err := openOutput(cfg, stdout)
	if err != nil {
		return err
	}
	defer closeOut()

	var live *statusLine
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !cfg.Verbose {
		live = newStatusLine(stderr)
		if out == stdout {
			out = live.wrap(out)
		}
	}
	var r render.Renderer
	if cfg.OutputJSON {
		r = render.NewNDJSON(out)
	} else {
		r = render.NewText(out)
	}
	obs := observers(sources, ecfg.Netfilter)
	if cfg.OutputPcapng != "" {
		pf, err := os.OpenFile(cfg.OutputPcapng, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("pcapng output file not writable: %w", err)
		}
		defer pf.Close()
		pr, err := render.NewPcapng(pf, "pktfate "+version)
		if err != nil {
			return err
		}
		pr.Correlated = len(obs) >= 2
		r = render.Multi{r, pr}
	}
	var rec *fate.Recorder
	if cfg.Record != "" {
		if len(obs) < 2 {
			return fmt.Errorf("--record writes the correlator's input, and only one observer runs (%s): add a source with --source", strings.Join(obs, ","))
		}
		rf, err := os.OpenFile(cfg.Record, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("recording file not writable: %w", err)
		}
		defer rf.Close()
		rec = fate.NewRecorder(rf)
	}
	stats := &capture.Stats{}
	ccfg := capture.Config{
		Now:       tracer.MonoNow,
		Sources:   sources,
		Observers: obs,
		Window:    cfg.Window,
		NFCovers:  src.NetfilterCovers,
		Record:    rec,
		FatesOnly: !cfg.OutputJSON,
		Status:    status,
		Filter:    filter,
		Reasons:   reasons,
		Count:     cfg.Count,
		Duration:  cfg.Duration,
		Renderer:  r,
		Ready: func() error {
			logf("attached in %s (kfree_skb, consume_skb location: %v)", time.Since(started).Round(time.Millisecond), src.ConsumeLocation)
			switch {
			case src.NetfilterMethod == tracer.NetfilterLinks:
				logf("netfilter attribution: BPF netfilter links in %d network namespace(s)", src.NetfilterNamespaces())
			case src.NetfilterMethod != "":
				logf("netfilter attribution: %s on nf_hook_slow (every network namespace)", src.NetfilterMethod)
			}
			if live != nil {
				live.start(stats)
			}
			if dm != nil && dm.Passive() {
				fmt.Fprintln(stderr, "pktfate: drop monitoring was already running (dropwatch or another pktfate): source dropmon attached passively and leaves it running")
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
	if live != nil {
		live.stop()
	}
	return err
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

// chooseDropmon adds the drop monitor source (NET_DM) when it was asked for,
// explicitly (then it must run) or through auto (then it runs where the
// kernel has it). NET_DM alerts carry no network namespace and no mark, so
// the in-kernel filters cannot apply to them.
func chooseDropmon(cfg traceConfig, decoder *tracer.Decoder, kernelFilters bool) (*tracer.Dropmon, []fate.SourceStatus, error) {
	explicit, auto := slices.Contains(cfg.Sources, "dropmon"), slices.Contains(cfg.Sources, "auto")
	if !explicit && !auto {
		return nil, nil, nil
	}
	src := tracer.NewDropmon(tracer.DropmonConfig{SnapLen: cfg.SnapLen, Decoder: decoder})
	err := src.CanRun()
	switch {
	case err != nil:
	case cfg.FilterFate == "consume":
		err = errors.New("the drop monitor reports drops only (--filter-fate consume)")
	case kernelFilters:
		err = errors.New("NET_DM alerts carry no network namespace or mark: --filter-netns, --filter-ifname and --filter-mark cannot apply to them")
	}
	if err != nil {
		if explicit {
			return nil, nil, fmt.Errorf("source dropmon cannot run: %w", err)
		}
		return nil, []fate.SourceStatus{{Name: "dropmon", Reason: err.Error()}}, nil
	}
	return src, nil, nil
}

// chooseKmod adds the module source (pktfate.ko) when it was asked for,
// explicitly (then it must run: a missing module is an error saying how to
// build and load it) or through auto (then it runs when the module is
// loaded). The module filters by network namespace and mark in the kernel;
// it has no interface filter.
func chooseKmod(cfg traceConfig, decoder *tracer.Decoder, netns, mark, mask uint32, ifFilter bool) (*tracer.Kmod, []fate.SourceStatus, error) {
	explicit, auto := slices.Contains(cfg.Sources, "kmod"), slices.Contains(cfg.Sources, "auto")
	if !explicit && !auto {
		return nil, nil, nil
	}
	src := tracer.NewKmod(tracer.KmodConfig{
		Filter:  kmod.Filter{Netns: netns, Mark: mark, MarkMask: mask},
		Decoder: decoder,
	})
	var err error
	switch {
	case cfg.FilterFate == "consume":
		err = errors.New("the module reports drops only (--filter-fate consume)")
	case ifFilter:
		err = errors.New("the module has no interface filter: --filter-ifname cannot apply to it")
	default:
		err = src.CanRun()
	}
	if err != nil {
		if explicit {
			return nil, nil, fmt.Errorf("source kmod cannot run: %w", err)
		}
		return nil, []fate.SourceStatus{{Name: "kmod", Reason: err.Error()}}, nil
	}
	return src, nil, nil
}

// chooseNetfilter turns on the netfilter hook attribution (source nf) when
// it was asked for, explicitly (then it must run) or through auto (then it
// runs where the kernel can). BPF netfilter links live in one network
// namespace: they go into the one of --filter-netns, else into every one
// that exists at the start and every one created while the capture runs
// (within a second).
func chooseNetfilter(sources []string, ecfg *tracer.EBPFConfig, netnsInode uint32, netnsPath string) ([]fate.SourceStatus, error) {
	explicit, auto := slices.Contains(sources, "nf"), slices.Contains(sources, "auto")
	if !explicit && !auto {
		return nil, nil
	}
	method, err := tracer.NetfilterMethodAvailable()
	if err == nil && method == tracer.NetfilterLinks && netnsInode != 0 && netnsPath == "" {
		err = fmt.Errorf("netfilter links attach inside one network namespace and namespace %d cannot be opened; give --filter-netns as a name or path", netnsInode)
	}
	if err != nil {
		if explicit {
			return nil, fmt.Errorf("source nf cannot run: %w", err)
		}
		return []fate.SourceStatus{{Name: "nf", Reason: err.Error()}}, nil
	}
	ecfg.Netfilter, ecfg.NetfilterNetns, ecfg.NetfilterMethod = true, netnsPath, method
	// Without a namespace to watch, watch them all (and those made later).
	ecfg.NetfilterAllNetns = netnsInode == 0
	return []fate.SourceStatus{{Name: "nf", Running: true}}, nil
}

// observers names what runs: every source, and nf when the ebpf source
// attributes netfilter drops (an observer of its own: other programs).
func observers(sources []fate.Source, netfilter bool) []string {
	var out []string
	for _, s := range sources {
		out = append(out, s.Name())
	}
	if netfilter {
		out = append(out, fate.ObserverNF)
	}
	return out
}
