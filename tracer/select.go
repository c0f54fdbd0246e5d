package tracer

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/net/bpf"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/kmod"
	"github.com/pktfate/pktfate/internal/ringrec"
)

// Source names as the user gives them (--source).
const (
	SourceAuto    = "auto"
	SourceEBPF    = "ebpf"
	SourceNF      = "nf"
	SourceDropmon = "dropmon"
	SourceKmod    = "kmod"
)

// SourceNames lists the names Select accepts, auto last.
var SourceNames = []string{SourceEBPF, SourceNF, SourceDropmon, SourceKmod, SourceAuto}

// SelectConfig is what decides which sources run and how.
type SelectConfig struct {
	// Names are the sources asked for: a named source is mandatory (Select
	// fails when it cannot run), "auto" adds every other one this kernel
	// can run (best effort: the others are reported with the reason).
	Names []string
	// Optional names sources tried best effort, as auto tries every one.
	Optional []string
	// Filters are the user's filters; every source is asked whether it can
	// apply them.
	Filters fate.Filters
	// NetnsPath is a path of the one network namespace in Filters.Netns
	// ("" when there is none or it cannot be opened): BPF netfilter links
	// are attached inside it.
	NetnsPath string
	// PcapFilter is the pcap-filter expression's classic BPF program
	// (pcapfilter.Filter.Program), run by the ebpf source in the kernel
	// where it can be translated; nil for none.
	PcapFilter []bpf.RawInstruction
	// Kernel is the running kernel's BTF.
	Kernel *btf.Spec
	// Decoder names reasons and locations; each source gets a Fork of it.
	Decoder *Decoder
	// RingBufferSize overrides the ebpf source's ring (0: the default).
	RingBufferSize int
	// Raw makes the ebpf source write its records undecoded
	// (EBPFConfig.Raw).
	Raw *ringrec.RawWriter
	// Dropmon and Kmod carry the options of those sources (their filters
	// and decoders are filled in by Select).
	Dropmon DropmonConfig
	Kmod    KmodConfig
}

// Selection is what Select chose.
type Selection struct {
	// Sources to run, the ebpf source (when it runs) first.
	Sources []fate.Source
	// Status names every source asked for (by name or through auto)
	// that does not run, with the reason.
	Status []fate.SourceStatus
	// EBPF is the ebpf source in Sources, or nil.
	EBPF *EBPF
	// Dropmon and Kmod are those sources in Sources, or nil.
	Dropmon *Dropmon
	Kmod    *Kmod
}

// Observers lists the observers of every chosen source.
func (s *Selection) Observers() []string {
	var out []string
	for _, src := range s.Sources {
		out = append(out, src.Observers()...)
	}
	return out
}

// Select chooses the sources: one place for the rules of which source runs
// with which filters. Each candidate is asked CanRun with the filters; a
// named source that cannot run is an error saying why, a source auto
// chose is reported in Status instead.
func Select(cfg SelectConfig) (*Selection, error) {
	for _, n := range cfg.Names {
		if !slices.Contains(SourceNames, n) {
			return nil, fmt.Errorf("unknown source %q: use %s", n, strings.Join(SourceNames, ", "))
		}
	}
	named := func(n string) bool { return slices.Contains(cfg.Names, n) }
	auto := named(SourceAuto)
	tried := func(n string) bool { return auto || named(n) || slices.Contains(cfg.Optional, n) }
	sel := &Selection{}
	// wanted decides for one candidate: run it, report it, or fail.
	wanted := func(name string, err error) (bool, error) {
		switch {
		case err == nil:
			return true, nil
		case named(name):
			return false, fmt.Errorf("source %s cannot run: %w", name, err)
		default:
			sel.Status = append(sel.Status, fate.SourceStatus{Name: name, Reason: err.Error()})
			return false, nil
		}
	}
	f := cfg.Filters

	// ebpf and nf: one source, the tracepoint programs and the netfilter
	// programs sharing their maps.
	if tried(SourceEBPF) || tried(SourceNF) {
		ecfg := EBPFConfig{
			SnapLen: f.SnapLen, Drops: f.Drops, Consumes: f.Consumes,
			FilterIfindex: f.Ifindex, FilterMark: f.Mark, FilterMarkMask: f.MarkMask,
			RingBufferSize: cfg.RingBufferSize, Kernel: cfg.Kernel, Decoder: cfg.Decoder.Fork(),
			PcapFilter:    cfg.PcapFilter,
			NetfilterOnly: !tried(SourceEBPF),
			Raw:           cfg.Raw,
		}
		if len(f.Netns) == 1 {
			ecfg.FilterNetns = f.Netns[0]
		} else {
			ecfg.FilterNetnsList = f.Netns
		}
		src := NewEBPF(ecfg)
		run, err := wanted(SourceEBPF, src.CanRun(f))
		if err != nil {
			return nil, err
		}
		if !run && named(SourceNF) {
			return nil, fmt.Errorf("source nf cannot run: it needs the ebpf source's programs: %w", src.CanRun(f))
		}
		if run && tried(SourceNF) {
			ok, err := wanted(SourceNF, netfilterCanRun(f, cfg.NetnsPath, &ecfg))
			if err != nil {
				return nil, err
			}
			if !ok && ecfg.NetfilterOnly {
				run = false
			}
		}
		if run {
			src = NewEBPF(ecfg)
			sel.EBPF = src
			sel.Sources = append(sel.Sources, src)
		}
	}
	if tried(SourceDropmon) {
		dcfg := cfg.Dropmon
		dcfg.SnapLen, dcfg.Decoder = f.SnapLen, cfg.Decoder.Fork()
		src := NewDropmon(dcfg)
		run, err := wanted(SourceDropmon, src.CanRun(f))
		if err != nil {
			return nil, err
		}
		if run {
			sel.Dropmon = src
			sel.Sources = append(sel.Sources, src)
		}
	}
	if tried(SourceKmod) {
		kcfg := cfg.Kmod
		kcfg.Decoder = cfg.Decoder.Fork()
		kcfg.Filter = KmodFilter(f, kcfg.Filter.Families)
		src := NewKmod(kcfg)
		run, err := wanted(SourceKmod, src.CanRun(f))
		if err != nil {
			return nil, err
		}
		if run {
			sel.Kmod = src
			sel.Sources = append(sel.Sources, src)
		}
	}
	if len(sel.Sources) == 0 {
		return nil, errors.New("no source can run here: " + statusReasons(sel.Status))
	}
	return sel, nil
}

// ForNetns returns a function choosing the sources that trace one network
// namespace, as pktfate check runs them: the ebpf source (it must run) and
// its netfilter attribution where the kernel can, drops and consumes.
func ForNetns(cfg SelectConfig) func(inode uint32, path string) ([]fate.Source, []fate.SourceStatus, error) {
	return func(inode uint32, path string) ([]fate.Source, []fate.SourceStatus, error) {
		c := cfg
		c.Names, c.Optional = []string{SourceEBPF}, []string{SourceNF}
		c.Filters.Netns, c.NetnsPath = []uint32{inode}, path
		c.Filters.Drops, c.Filters.Consumes = true, true
		sel, err := Select(c)
		if err != nil {
			return nil, nil, err
		}
		return sel.Sources, sel.Status, nil
	}
}

// netfilterCanRun says whether the netfilter attribution can run with
// these filters, and sets it up in ecfg when it can. BPF netfilter links
// live in one network namespace: they go into the one of the filter, else
// (no namespace filter, or several: the programs skip the others) into
// every one that exists at the start and every one created while the
// capture runs (within a second).
func netfilterCanRun(f fate.Filters, netnsPath string, ecfg *EBPFConfig) error {
	if !f.Drops {
		return fmt.Errorf("it attributes drops only: %w", fate.ErrFilter)
	}
	method, err := NetfilterMethodAvailable()
	if err != nil {
		return err
	}
	if method == NetfilterLinks && len(f.Netns) == 1 && netnsPath == "" {
		return fmt.Errorf("netfilter links attach inside one network namespace and namespace %d cannot be opened; give --filter-netns as a name or path: %w", f.Netns[0], fate.ErrFilter)
	}
	ecfg.Netfilter, ecfg.NetfilterNetns, ecfg.NetfilterMethod = true, netnsPath, method
	ecfg.NetfilterAllNetns = len(f.Netns) != 1
	if len(f.Netns) > 1 {
		ecfg.NetfilterNetns = ""
	}
	return nil
}

func statusReasons(st []fate.SourceStatus) string {
	var parts []string
	for _, s := range st {
		parts = append(parts, s.Name+": "+s.Reason)
	}
	return strings.Join(parts, "; ")
}

// KmodFilter is the module's filter for fate.Filters and the families
// (kmod.Filter.Families) to report.
func KmodFilter(f fate.Filters, families kmod.Families) kmod.Filter {
	k := kmod.Filter{Mark: f.Mark, MarkMask: f.MarkMask, Families: families}
	if len(f.Netns) == 1 {
		k.Netns = f.Netns[0]
	}
	return k
}
