package tracer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/cbpf"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/ringrec"
	"golang.org/x/net/bpf"
)

// EBPFConfig configures the ebpf source. The filters run in the kernel,
// before an event is reserved in the ring buffer.
type EBPFConfig struct {
	// SnapLen is how many bytes of each packet to capture from its network
	// header, at most MaxSnapLen. Zero means the default, 128.
	SnapLen int
	// Drops and Consumes select which tracepoints to attach.
	Drops, Consumes bool
	// FilterNetns keeps only packets whose device (or socket) is in the
	// network namespace with this inode; 0 keeps all.
	FilterNetns uint32
	// FilterNetnsList keeps packets in any of these namespaces (at most
	// MaxFilterNetns, FilterNetns among them when set).
	FilterNetnsList []uint32
	// FilterIfindex keeps only packets on this interface index; 0 keeps all.
	FilterIfindex uint32
	// FilterMark and FilterMarkMask keep only packets with
	// skb->mark & mask == mark; a zero mask keeps all.
	FilterMark, FilterMarkMask uint32
	// RingBufferSize in bytes, a power of two multiple of the page size.
	// Zero means the default, 16 MiB.
	RingBufferSize int
	// Netfilter attributes packets freed inside a netfilter hook's chain to
	// that hook, with BPF netfilter programs at the first and last priority
	// of every inet hook for IPv4 and IPv6 (kernel 6.4 and later).
	// Netfilter links belong to one network namespace: they are attached in
	// NetfilterNetns (a path such as /run/netns/NAME; "" is the current
	// one), or with NetfilterAllNetns in every network namespace that
	// exists at Start (ListNetns).
	Netfilter         bool
	NetfilterNetns    string
	NetfilterAllNetns bool
	// NetfilterMethod forces NetfilterLinks or NetfilterFexit; "" picks
	// links where the kernel has them (6.4+), else fexit on nf_hook_slow,
	// which sees every network namespace.
	NetfilterMethod string
	// PcapFilter is the trailing pcap-filter expression compiled by libpcap
	// (pcapfilter.Filter.Program), run in the programs before an event is
	// reserved; nil runs none. An expression the translation cannot run
	// (internal/cbpf.ErrUnsupported) is left to user space:
	// KernelFilter then says why.
	PcapFilter []bpf.RawInstruction
	// NetfilterOnly reports only packets freed inside a netfilter hook, as
	// the nf observer: the user asked for nf alone. The tracepoint
	// programs still run (they see the free); the ebpf observer does not.
	NetfilterOnly bool
	// ShowNonPackets also reports skbs that are not network packets (no
	// protocol, no MAC header: netlink, unix, vsock buffers); otherwise
	// they are only counted (Information: not_packets).
	ShowNonPackets bool
	// Kernel is the kernel's BTF (nil loads the running kernel's).
	Kernel *btf.Spec
	// Decoder turns records into events (nil builds one from the kernel's
	// BTF and /proc/kallsyms).
	Decoder *Decoder
	// Raw, when set, receives every record undecoded (a raw capture,
	// pktfate trace --output-raw) and Run hands its sink nothing: decoding,
	// and finding the frees after a read, are left to the capture's
	// reader (ringrec.Stream). Interfaces the records name only by index
	// are named in the capture.
	Raw *ringrec.RawWriter
}

const (
	defaultSnapLen = 128
	// DefaultRingBuffer is the ebpf source's ring buffer, in bytes.
	DefaultRingBuffer = 16 << 20
	// wakeupEvery is how many events a CPU submits between two wakeups of
	// the reader: a wakeup per event would cost the packet path an irq_work
	// each time. readPoll bounds how long the events in between wait.
	wakeupEvery = 2048
	readPoll    = 50 * time.Millisecond
)

// EBPF observes kfree_skb and consume_skb through BTF tracepoints.
// Create it with NewEBPF; it must be closed.
type EBPF struct {
	cfg     EBPFConfig
	maps    skbfateMaps
	progs   []*ebpf.Program
	links   []link.Link
	ring    *ring
	decoder *Decoder

	// stream decodes the records; it counts the undecodable and the frees
	// after a read it found (the BPF programs count their own).
	stream ringrec.Stream
	// runMu is held by Run for as long as it runs: Close, after closing
	// the ring that wakes it, waits on it before it closes the maps that
	// Run's stop still reads. closed (under runMu) makes a late Run return.
	runMu  sync.Mutex
	closed bool
	// eventLinks is how many of links (the first) attach the programs
	// that write events; Run detaches them at the stop.
	eventLinks int
	// read counts the records read from the ring; unread is what the
	// programs submitted that was still unread when the drain at the
	// stop ended (unreadErr when that could not be counted).
	read      atomic.Uint64
	unread    atomic.Uint64
	unreadErr atomic.Pointer[string]
	// netnsByIif counts packets reported whose namespace nothing in the skb
	// named: the netns filter placed them by the interface they arrived on.
	netnsByIif atomic.Uint64
	// KernelFilter says why the pcap-filter expression does not run in the
	// kernel ("" when it does, or there is none). Valid after Start.
	KernelFilter string
	// ConsumeLocation reports whether consume_skb events carry their
	// caller (kernel 6.3 and later). Valid after Start.
	ConsumeLocation bool
	// Deliveries says how delivered packets are seen (with Consumes):
	// "read" (skb_copy_datagram_iovec: a socket copied the packet to user
	// space), plus "defer_free" where fentry reaches skb_attempt_defer_free.
	// DeliveriesBlind, when not empty, says once what cannot be seen on
	// this kernel. Valid after Start.
	Deliveries      []string
	DeliveriesBlind string
	deliveriesWhy   error
	// ListenDropsBlind, when not empty, says that SYNs a listener refuses
	// cannot be told from accepted ones here (no fentry on
	// tcp_conn_request): both are freed by the same consume_skb.
	ListenDropsBlind string
	// netnsIfindexes: the interface indexes of the filtered namespaces
	// that the kernel filter knows, with their namespace (see
	// filter_netns_ifindexes).
	netnsIfindexes map[uint32]uint32
	// NetfilterMethod is the netfilter attribution method in use
	// (NetfilterLinks, NetfilterFexit), "" when off. Valid after Start.
	NetfilterMethod string
	// nfNetns maps the inodes of the network namespaces the netfilter
	// links are attached in to when (monotonic ns; 0: from the start);
	// nil when fexit sees them all. nfRescan: look for new namespaces
	// while running. nfMu guards nfNetns and links while that runs.
	nfMu     sync.Mutex
	nfNetns  map[uint32]uint64
	nfRescan bool
	nfClosed bool
	// nfRescanErrs counts failures to attach in namespaces found by a
	// rescan; nfRescanLast is the last one.
	nfRescanErrs int
	nfRescanLast error
	nfObjs       nfLinkObjects
	// nfLinks holds the netfilter links of each namespace (links method),
	// released when the namespace goes away (see rescanNetns); nfHeld
	// says when a namespace that no mount or process names was last found
	// held open by a descriptor.
	nfLinks map[uint32][]link.Link
	nfHeld  map[uint32]time.Time
	// nfWait holds the namespaces (inode: path) without links because
	// they had no chain to bracket when last looked at (nfchains.go);
	// nfKicked those where a drop showed a hook no chain shows, and
	// nfKick wakes the goroutine that attaches there.
	nfWait   map[uint32]string
	nfKicked map[uint32]bool
	nfKick   chan struct{}
	// nfWatch holds the nftables notification sockets of the waiting
	// namespaces (nftWatch); nfWatchers waits for their goroutines.
	nfWatch    map[uint32]io.Closer
	nfWatchers sync.WaitGroup
}

// NetfilterCovers reports whether the netfilter attribution could see a
// packet at time mono (monotonic ns) in the network namespace with inode
// netns: always with fexit; with links, once they were attached there.
func (s *EBPF) NetfilterCovers(netns uint32, mono uint64) bool {
	if s.NetfilterMethod == "" {
		return false
	}
	s.nfMu.Lock()
	defer s.nfMu.Unlock()
	if s.nfNetns == nil {
		return true
	}
	since, ok := s.nfNetns[netns]
	return ok && mono >= since
}

// NetfilterNamespaces is how many network namespaces the netfilter links
// are attached in (0 with fexit, which sees all).
func (s *EBPF) NetfilterNamespaces() int {
	s.nfMu.Lock()
	defer s.nfMu.Unlock()
	return len(s.nfNetns)
}

// nfStack is the depth of the BPF programs' per-CPU stack of chains in
// progress (NF_STACK in bpf/skbfate.c).
const nfStack = 8

// nfDepth is how deep that stack may go: nfStack, or less when the
// environment sets PKTFATE_TEST_NF_DEPTH (a test knob: the tests drive
// nf_inflight_full with the one nested chain a REJECT makes).
func nfDepth() uint32 {
	if d, err := strconv.ParseUint(os.Getenv("PKTFATE_TEST_NF_DEPTH"), 10, 32); err == nil && d > 0 && d < nfStack {
		return uint32(d)
	}
	return nfStack
}

// NetfilterWaiting is how many network namespaces have no netfilter links
// because they had no chain to bracket when last looked at (nfchains.go).
func (s *EBPF) NetfilterWaiting() int {
	s.nfMu.Lock()
	defer s.nfMu.Unlock()
	return len(s.nfWait)
}

// NewEBPF returns an ebpf source; nothing is loaded until Start.
func NewEBPF(cfg EBPFConfig) *EBPF {
	if cfg.SnapLen == 0 {
		cfg.SnapLen = defaultSnapLen
	}
	if cfg.RingBufferSize == 0 {
		cfg.RingBufferSize = DefaultRingBuffer
	}
	return &EBPF{cfg: cfg}
}

// Name implements Source.
func (s *EBPF) Name() string { return "ebpf" }

// spliceFilter puts the pcap-filter expression into the programs'
// placeholders and reports whether it did; when it cannot, it says why in
// KernelFilter and the expression runs in user space.
func (s *EBPF) spliceFilter(spec *ebpf.CollectionSpec) bool {
	if s.cfg.PcapFilter == nil {
		return false
	}
	for _, v := range []struct {
		variant cbpf.Variant
		symbol  string
	}{{cbpf.L3, "pktfate_filter_l3"}, {cbpf.L2, "pktfate_filter_l2"}} {
		insns, err := cbpf.Translate(s.cfg.PcapFilter, v.variant)
		if err == nil {
			_, err = cbpf.SpliceCollection(spec, v.symbol, insns)
		}
		if err != nil {
			s.KernelFilter = fmt.Sprintf("the filter expression runs in user space, after every freed packet has crossed the ring buffer: %v", err)
			return false
		}
	}
	s.KernelFilter = ""
	return true
}

// Observers implements fate.Source: "ebpf", and "nf" when the source
// attributes drops to netfilter hooks.
func (s *EBPF) Observers() []string {
	if s.cfg.NetfilterOnly {
		return []string{fate.ObserverNF}
	}
	if s.cfg.Netfilter {
		return []string{fate.ObserverEBPF, fate.ObserverNF}
	}
	return []string{fate.ObserverEBPF}
}

// Blind implements fate.Source: the kfree_skb and consume_skb tracepoints
// see every freed packet; the netfilter attribution sees only packets
// freed inside a hook, and with links only in the network namespaces they
// were attached in, from then on.
func (s *EBPF) Blind(observer string, r *fate.FateRecord) string {
	if observer == fate.ObserverNF {
		e := r.Event
		if e.Netns != 0 && !s.NetfilterCovers(e.Netns, r.Mono()) {
			if e.Reason != "NETFILTER_DROP" {
				if why := fate.KnownBlind(observer, r); why != "" {
					return why
				}
			}
			return "netfilter links were not attached in this network namespace at the time: they are attached where an IPv4 or IPv6 " +
				"chain is (an nftables chain within milliseconds of its making, a legacy iptables table or a namespace made during the " +
				"capture within a second), and at once where a drop shows a hook that no chain shows (conntrack for tc or openvswitch, " +
				"another BPF program)"
		}
		if e.NFBlind != "" {
			return e.NFBlind
		}
	}
	return fate.KnownBlind(observer, r)
}

// MaxFilterNetns is how many network namespaces the ebpf source's filter
// keeps at most.
const MaxFilterNetns = 8

// filterNetns lists the namespaces kept (FilterNetns, FilterNetnsList).
func (c *EBPFConfig) filterNetns() []uint32 {
	var out []uint32
	for _, n := range append([]uint32{c.FilterNetns}, c.FilterNetnsList...) {
		if n != 0 && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// CanRun implements fate.Source: it needs kernel BTF with the kfree_skb
// tracepoint, and CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN). It applies
// MaxFilterNetns network namespace filters at most.
func (s *EBPF) CanRun(f fate.Filters) error {
	if len(f.Netns) > MaxFilterNetns {
		return fmt.Errorf("the ebpf source filters on %d network namespaces at most, not %d: %w", MaxFilterNetns, len(f.Netns), fate.ErrFilter)
	}
	if err := checkBPFCaps(); err != nil {
		return err
	}
	spec, err := s.kernelBTF()
	if err != nil {
		return err
	}
	for _, tp := range []string{"kfree_skb", "consume_skb"} {
		var td *btf.Typedef
		if err := spec.TypeByName("btf_trace_"+tp, &td); err != nil {
			return fmt.Errorf("kernel has no %s tracepoint in its BTF: %w", tp, notSupported(err))
		}
	}
	return nil
}

func (s *EBPF) kernelBTF() (*btf.Spec, error) {
	if s.cfg.Kernel != nil {
		return s.cfg.Kernel, nil
	}
	spec, err := KernelBTF()
	if err != nil {
		return nil, fmt.Errorf("loading kernel BTF (the kernel needs CONFIG_DEBUG_INFO_BTF=y, /sys/kernel/btf/vmlinux): %w", err)
	}
	s.cfg.Kernel = spec
	return spec, nil
}

// tracepointArgs returns the number of arguments of a BTF tracepoint
// (without the leading context pointer).
func tracepointArgs(spec *btf.Spec, tp string) (int, error) {
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+tp, &td); err != nil {
		return 0, err
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("btf_trace_%s is a %T, not a function pointer", tp, td.Type)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("btf_trace_%s points to %T, not a function", tp, ptr.Target)
	}
	return len(proto.Params) - 1, nil
}

type objsDefer struct {
	Defer *ebpf.Program `ebpf:"defer_free"`
}

// Start implements Source: it loads the programs, attaches them and opens
// the ring buffer.
func (s *EBPF) Start() error {
	if !s.cfg.Drops && !s.cfg.Consumes {
		return errors.New("ebpf source: nothing to trace (neither drops nor consumes selected)")
	}
	if s.cfg.SnapLen < 0 || s.cfg.SnapLen > MaxSnapLen {
		return fmt.Errorf("snap length %d out of range: use 0 to %d", s.cfg.SnapLen, MaxSnapLen)
	}
	kernel, err := s.kernelBTF()
	if err != nil {
		return err
	}
	if s.cfg.Consumes {
		n, err := tracepointArgs(kernel, "consume_skb")
		if err != nil {
			return fmt.Errorf("inspecting consume_skb tracepoint: %w", err)
		}
		s.ConsumeLocation = n >= 2
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}
	spec, err := loadSkbfate()
	if err != nil {
		return fmt.Errorf("reading embedded BPF object: %w", err)
	}
	spec.Maps[skbfateMapEvents].MaxEntries = uint32(s.cfg.RingBufferSize)
	kept := s.cfg.filterNetns()
	if len(kept) > MaxFilterNetns {
		return fmt.Errorf("the ebpf source filters on %d network namespaces at most, not %d: %w", MaxFilterNetns, len(kept), fate.ErrFilter)
	}
	var netnsSet [MaxFilterNetns]uint32
	copy(netnsSet[:], kept)
	for name, v := range map[string]any{
		skbfateVarSnapLen:        uint32(s.cfg.SnapLen),
		skbfateVarFilterNetns:    netnsSet,
		skbfateVarFilterNetnsN:   uint32(len(kept)),
		skbfateVarFilterIfindex:  s.cfg.FilterIfindex,
		skbfateVarFilterMark:     s.cfg.FilterMark & s.cfg.FilterMarkMask,
		skbfateVarFilterMarkMask: s.cfg.FilterMarkMask,
		skbfateVarWakeupEvery:    uint64(wakeupEvery),
		skbfateVarNfEnabled:      s.cfg.Netfilter,
		skbfateVarShowNonPackets: s.cfg.ShowNonPackets,
		skbfateVarFilterPcap:     s.spliceFilter(spec),
		skbfateVarNfDepth:        nfDepth(),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("setting BPF variable %s: %w", name, err)
		}
	}
	opts := collectionOptions(kernel)
	if err := spec.LoadAndAssign(&s.maps, opts); err != nil {
		return fmt.Errorf("creating BPF maps: %w", explainLoadError(err))
	}
	var names []string
	if s.cfg.Drops {
		names = append(names, "kfree_skb")
	}
	if s.cfg.Consumes {
		consume := "consume_skb_noloc"
		if s.ConsumeLocation {
			consume = "consume_skb"
		}
		names = append(names, consume, "skb_read")
	}
	loaded, err := s.loadPrograms(spec, opts, names)
	if err != nil {
		return err
	}
	for _, p := range loaded {
		s.progs = append(s.progs, p)
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attaching %s tracepoint: %w", p, err)
		}
		s.links = append(s.links, l)
	}
	if s.cfg.Consumes {
		s.Deliveries = []string{"read"}
		if err := s.attachDeferFree(spec, opts); err != nil {
			s.DeliveriesBlind = "some delivered TCP and UDP packets are not seen on this kernel: the free that " +
				"follows their delivery (skb_attempt_defer_free) passes no tracepoint and fentry is not available here; " +
				"they are seen only when a socket reads them through skb_copy_datagram_iovec, which a small UDP datagram does not take"
			s.deliveriesWhy = err
		} else {
			s.Deliveries = append(s.Deliveries, "defer_free")
		}
		if err := s.attachListenDrops(spec, opts); err != nil {
			s.ListenDropsBlind = "SYNs a listener refuses (a full accept queue: ListenOverflows, ListenDrops) are shown as " +
				"consumed on this kernel: they are freed where accepted ones are, and fentry on tcp_conn_request, " +
				"which tells them apart, is not available (" + err.Error() + ")"
		}
	}
	s.eventLinks = len(s.links)
	if len(kept) > 0 {
		if err := s.refreshNetnsIfindexes(); err != nil {
			return err
		}
	}
	if s.cfg.Netfilter {
		if err := s.attachNetfilter(spec, opts); err != nil {
			return err
		}
	}
	s.ring, err = newRing(s.maps.Events)
	if err != nil {
		return fmt.Errorf("opening ring buffer: %w", err)
	}
	if s.cfg.Decoder != nil {
		s.decoder = s.cfg.Decoder
	} else {
		s.decoder, err = DefaultDecoder(kernel)
		if err != nil {
			return err
		}
	}
	if s.cfg.Netfilter {
		s.decoder.NFBlind = NetfilterBlindness(s.NetfilterMethod)
	}
	// Started means able to decode: the first record names its location,
	// so it waits for /proc/kallsyms (read in the background since the
	// decoder was made, alongside the loads above). Returning earlier let
	// the traffic begin while this source could not read a record, and
	// the others' sightings of the first packets went out on their own
	// (dropmon's alerts carry their symbol, and need no table). A table
	// that could not be read is no failure: locations are then addresses.
	_ = s.decoder.Symbols.Err()
	return nil
}

// loadPrograms loads the named programs of spec, in one collection,
// against the maps already created.
func (s *EBPF) loadPrograms(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, names []string) ([]*ebpf.Program, error) {
	o := *opts
	o.MapReplacements = s.mapReplacements()
	some := &ebpf.CollectionSpec{Maps: spec.Maps, Variables: spec.Variables, Types: spec.Types, ByteOrder: spec.ByteOrder,
		Programs: map[string]*ebpf.ProgramSpec{}}
	for _, n := range names {
		some.Programs[n] = spec.Programs[n]
	}
	coll, err := ebpf.NewCollectionWithOptions(some, o)
	if err != nil {
		return nil, fmt.Errorf("loading BPF programs: %w", explainLoadError(err))
	}
	defer coll.Close()
	progs := make([]*ebpf.Program, len(names))
	for i, n := range names {
		progs[i] = coll.DetachProgram(n)
	}
	return progs, nil
}

// attachDeferFree attaches fentry on skb_attempt_defer_free, which frees
// delivered TCP (5.19+) and UDP (6.18+) packets without a tracepoint.
func (s *EBPF) attachDeferFree(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	if err := FexitSupported(); err != nil {
		// No trampolines here: loading the real program would only fail
		// later, and slowly.
		return fmt.Errorf("fentry: %w", err)
	}
	dopts := *opts
	dopts.MapReplacements = s.mapReplacements()
	var o objsDefer
	if err := spec.LoadAndAssign(&o, &dopts); err != nil {
		return fmt.Errorf("loading fentry on skb_attempt_defer_free: %w", notSupported(explainLoadError(err)))
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: o.Defer})
	if err != nil {
		o.Defer.Close()
		return fmt.Errorf("attaching fentry on skb_attempt_defer_free: %w", notSupported(err))
	}
	s.progs = append(s.progs, o.Defer)
	s.links = append(s.links, l)
	return nil
}

type objsListen struct {
	Enter *ebpf.Program `ebpf:"listen_enter"`
	Exit  *ebpf.Program `ebpf:"listen_exit"`
}

// attachListenDrops attaches fentry and fexit on tcp_conn_request: a SYN
// during which the listener counted a drop is marked refused, and its
// free is reported as a drop (ReasonListenDrop).
func (s *EBPF) attachListenDrops(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	if err := FexitSupported(); err != nil {
		return fmt.Errorf("fentry: %w", err)
	}
	lopts := *opts
	lopts.MapReplacements = s.mapReplacements()
	var o objsListen
	if err := spec.LoadAndAssign(&o, &lopts); err != nil {
		return fmt.Errorf("loading fentry on tcp_conn_request: %w", notSupported(explainLoadError(err)))
	}
	s.progs = append(s.progs, o.Enter, o.Exit)
	// The exit first: an entry without its exit would leave a SYN marked.
	for _, p := range []*ebpf.Program{o.Exit, o.Enter} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attaching %s to tcp_conn_request: %w", p, notSupported(err))
		}
		s.links = append(s.links, l)
	}
	return nil
}

// mapReplacements makes programs loaded after the first collection share
// its maps.
func (s *EBPF) mapReplacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		skbfateMapInflight:             s.maps.Inflight,
		skbfateMapCounters:             s.maps.Counters,
		skbfateMapEvents:               s.maps.Events,
		skbfateMapCpuStates:            s.maps.CpuStates,
		skbfateMapFilterNetnsIfindexes: s.maps.FilterNetnsIfindexes,
	}
}

// refreshNetnsIfindexes tells the kernel filter the interface indexes of
// the filtered namespaces (an skb whose namespace nothing in it names
// passes the netns filter when it arrived on one of them), each with its
// namespace, or 0 when several have an interface of that index.
func (s *EBPF) refreshNetnsIfindexes() error {
	now := map[uint32]uint32{}
	for _, ino := range s.cfg.filterNetns() {
		path, err := netnsPath(ino)
		if err != nil {
			return err
		}
		var ifs []net.Interface
		if err := netns.DoPath(path, func() error {
			var err error
			ifs, err = net.Interfaces()
			return err
		}); err != nil {
			return fmt.Errorf("listing the interfaces of network namespace %d: %w", ino, err)
		}
		for _, i := range ifs {
			if prev, ok := now[uint32(i.Index)]; ok && prev != ino {
				now[uint32(i.Index)] = 0
			} else {
				now[uint32(i.Index)] = ino
			}
		}
	}
	for idx := range s.netnsIfindexes {
		if _, ok := now[idx]; !ok {
			s.maps.FilterNetnsIfindexes.Delete(idx)
		}
	}
	for idx, ino := range now {
		if old, ok := s.netnsIfindexes[idx]; !ok || old != ino {
			if err := s.maps.FilterNetnsIfindexes.Put(idx, ino); err != nil {
				return fmt.Errorf("telling the netns filter interface %d: %w", idx, err)
			}
		}
	}
	s.netnsIfindexes = now
	return nil
}

// netnsPath returns a path of the network namespace with inode ino ("" for
// the current one).
func netnsPath(ino uint32) (string, error) {
	if cur, err := netnsInode(""); err == nil && cur == ino {
		return "", nil
	}
	all, err := listNetns(false)
	if err != nil {
		return "", err
	}
	if p, ok := all[ino]; ok {
		return p, nil
	}
	if all, err = listNetns(true); err != nil {
		return "", err
	}
	if p, ok := all[ino]; ok {
		return p, nil
	}
	return "", fmt.Errorf("network namespace %d: no mount, process or descriptor holds it: %w", ino, os.ErrNotExist)
}

// DefaultDecoder builds a Decoder from kernel BTF (drop reasons) and
// /proc/kallsyms (locations, read in the background: the first event
// waits for it). Without readable kallsyms, locations are printed as
// addresses, and the ebpf source says so (Notices).
func DefaultDecoder(kernel *btf.Spec) (*Decoder, error) {
	reasons, err := ReasonsFromBTF(kernel)
	if err != nil {
		return nil, err
	}
	syms := LoadKallsymsAsync()
	return NewDecoder(reasons, syms, NewClock()), nil
}

func explainLoadError(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (need CAP_BPF and CAP_PERFMON, or root)", err)
	}
	return err
}

// Run implements Source.
func (s *EBPF) Run(ctx context.Context, h fate.Sink) error {
	if s.ring == nil {
		return errors.New("ebpf source: Run before Start")
	}
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.closed {
		return nil
	}
	filtered := len(s.cfg.filterNetns()) > 0
	links := s.nfWait != nil
	if s.nfRescan || filtered || links {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(nfRescanEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-s.nfKick:
					s.attachWaiting()
				case <-t.C:
					if s.nfRescan {
						s.rescanNetns()
					}
					if links {
						s.attachWaiting()
					}
					if filtered {
						// A namespace that is gone has no interfaces left to add.
						_ = s.refreshNetnsIfindexes()
					}
				}
			}
		}()
		defer func() { close(stop); <-done }()
	}
	var ev fate.Event
	var ifnames ifnameResolver
	s.stream.Decoder = s.decoder
	var handle func([]byte)
	if raw := s.cfg.Raw; raw != nil {
		raw.Symbols = s.decoder.Symbols
		raw.Ifname = ifnames.name
		handle = func(sample []byte) {
			s.read.Add(1)
			raw.Record(sample)
		}
		return s.readRing(ctx, handle, func(n int) error {
			if n == 0 {
				// Idle: what is buffered goes to the file, so that a
				// capture killed later keeps it.
				return raw.Flush()
			}
			return raw.Err()
		})
	}
	handle = func(sample []byte) {
		s.read.Add(1)
		if !s.stream.Next(sample, &ev) {
			return
		}
		if ev.NetnsFrom == fate.NetnsGuessed {
			s.netnsByIif.Add(1)
		}
		if links && ev.Hook == "" && ev.Netns != 0 && ev.Reason == "NETFILTER_DROP" {
			s.kickNetns(ev.Netns) // a hook no chain shows (nfchains.go)
		}
		if ev.Ifname == "" && ev.Ifindex != 0 {
			// The skb held no device: name the interface it arrived on.
			ev.Ifname = ifnames.name(ev.Netns, ev.Ifindex)
		}
		if s.cfg.NetfilterOnly {
			if ev.Hook == "" {
				return
			}
			ev.Source = fate.ObserverNF
		}
		h.Event(&ev)
	}
	return s.readRing(ctx, handle, nil)
}

// readRing hands every record to handle until ctx is done, then stops the
// observation (stop). after, when set, is called after each drain with
// the number of records it handed out; its error (a raw capture that
// cannot be written) ends the reading.
func (s *EBPF) readRing(ctx context.Context, handle func([]byte), after func(n int) error) error {
	for {
		n, err := s.ring.drain(handle)
		if err == nil && after != nil {
			if err = after(n); err != nil {
				return fmt.Errorf("writing the raw capture: %w", err)
			}
		}
		switch {
		case errors.Is(err, errRingClosed):
			return nil
		case err != nil:
			return err
		case ctx.Err() != nil:
			return s.stop(handle)
		}
		if err := s.ring.wait(readPoll); errors.Is(err, errRingClosed) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// stopDrainMax bounds the wait at the stop for records that programs
// still running when they were detached are writing.
const stopDrainMax = time.Second

// stop ends the observation: it detaches the programs that write events,
// reads the ring until every record they submitted is read (or
// stopDrainMax passed), and counts what is left unread (unread_at_stop).
func (s *EBPF) stop(handle func([]byte)) error {
	s.nfMu.Lock()
	for i := range min(s.eventLinks, len(s.links)) { // Close may have run
		if s.links[i] != nil {
			s.links[i].Close()
			s.links[i] = nil
		}
	}
	s.nfMu.Unlock()
	deadline := time.Now().Add(stopDrainMax)
	for {
		if _, err := s.ring.drain(handle); errors.Is(err, errRingClosed) {
			return nil
		} else if err != nil {
			return err
		}
		submitted, err := s.Submitted()
		if err != nil {
			msg := "counting the records left in the ring: " + err.Error()
			s.unreadErr.Store(&msg)
			return nil
		}
		read := s.read.Load()
		if read >= submitted {
			return nil
		}
		if time.Now().After(deadline) {
			s.unread.Store(submitted - read)
			return nil
		}
		// A program that ran when it was detached is finishing its
		// record: poll for it, bounded.
		time.Sleep(time.Millisecond)
	}
}

// Losses implements Source: ring-buffer reservations that failed (the
// buffer was full; the kernel counted them per CPU) and records that could
// not be decoded.
func (s *EBPF) Losses() []fate.Loss {
	out := []fate.Loss{
		s.counterLoss(fate.ObserverEBPF, "ringbuf_full", cntRingbufFull),
		{Observer: fate.ObserverEBPF, Name: "decode_errors", Value: s.stream.DecodeErrors.Load()},
	}
	if s.cfg.Netfilter {
		out = append(out, s.counterLoss(fate.ObserverNF, "inflight_full", cntNFInflightFull))
	}
	if s.KernelFilter == "" && len(s.cfg.PcapFilter) > 0 {
		// The expression runs in the kernel: a packet none of whose bytes
		// could be read cannot be judged there.
		out = append(out, s.counterLoss(fate.ObserverEBPF, "filter_no_bytes", cntFilterNoBytes))
	}
	unread := fate.Loss{Observer: fate.ObserverEBPF, Name: "unread_at_stop", Value: s.unread.Load()}
	if msg := s.unreadErr.Load(); msg != nil {
		unread.Unknown = *msg
	}
	return append(out, unread)
}

// counterLoss reads one of the BPF programs' per-CPU counters as a loss.
func (s *EBPF) counterLoss(observer, name string, idx uint32) fate.Loss {
	l := fate.Loss{Observer: observer, Name: name}
	v, err := s.counter(idx)
	if err != nil {
		l.Unknown = err.Error()
	}
	l.Value = v
	return l
}

func (s *EBPF) freedAfterReadCount() fate.Loss {
	l := s.counterLoss(fate.ObserverEBPF, "freed_after_read", cntFreedAfterRead)
	l.Value += s.stream.FreedAfterRead.Load()
	return l
}

// Information implements fate.Informer: counts that are not losses. skbs
// that are not network packets and were not shown (not_packets;
// EBPFConfig.ShowNonPackets shows them), and packets a netfilter hook
// stole or queued (nf stolen: they left their chain without reaching its
// last priority, e.g. fragments conntrack holds for reassembly).
func (s *EBPF) Information() []fate.Loss {
	out := []fate.Loss{
		s.counterLoss(fate.ObserverEBPF, "not_packets", cntNotPacket),
		// Delivered packets are reported at their read; their free after
		// it is one delivery, not two.
		s.freedAfterReadCount(),
	}
	if len(s.cfg.filterNetns()) > 0 {
		// Placed in a kept namespace by the index of the interface they
		// arrived on, the one thing left that names it (fragments purged
		// from a reassembly queue, say): another namespace's interface of
		// the same index would be taken for it.
		out = append(out, fate.Loss{Observer: fate.ObserverEBPF, Name: "netns_by_iif", Value: s.netnsByIif.Load()})
	}
	if s.cfg.Netfilter {
		out = append(out, s.counterLoss(fate.ObserverNF, "stolen", cntNFStolen),
			// Entries older than the in-flight stack's stale age (1 s at
			// HZ=250) let go: a packet freed with one is not attributed.
			s.counterLoss(fate.ObserverNF, "stale", cntNFStale))
	}
	return out
}

const (
	cntRingbufFull    = 0
	cntSubmitted      = 1
	cntNFInflightFull = 2
	cntNotPacket      = 3
	cntNFStolen       = 4
	cntFreedAfterRead = 5
	cntFilterNoBytes  = 6
	cntNFStale        = 7
)

func (s *EBPF) counter(idx uint32) (uint64, error) {
	if s.maps.Counters == nil {
		return 0, errors.New("the BPF programs are not loaded")
	}
	var perCPU []uint64
	if err := s.maps.Counters.Lookup(idx, &perCPU); err != nil {
		return 0, fmt.Errorf("reading the BPF counters: %w", err)
	}
	var total uint64
	for _, v := range perCPU {
		total += v
	}
	return total, nil
}

// Submitted returns how many events the BPF programs put into the ring buffer.
func (s *EBPF) Submitted() (uint64, error) { return s.counter(cntSubmitted) }

// Close implements Source.
func (s *EBPF) Close() error {
	var errs []error
	s.nfMu.Lock()
	s.nfClosed = true // a rescan still running attaches nothing more
	for _, l := range s.links {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	s.links = nil
	for _, ls := range s.nfLinks {
		for _, l := range ls {
			errs = append(errs, l.Close())
		}
	}
	s.nfLinks = nil
	for ino := range s.nfWatch {
		s.stopWatch(ino)
	}
	s.nfMu.Unlock()
	s.nfWatchers.Wait()
	if s.ring != nil {
		errs = append(errs, s.ring.Close())
	}
	s.runMu.Lock() // a Run still going returns once the ring is closed
	s.closed = true
	s.runMu.Unlock()
	for _, p := range s.progs {
		errs = append(errs, p.Close())
	}
	s.progs = nil
	errs = append(errs, s.maps.Close())
	return errors.Join(errs...)
}
