package tracer

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"golang.org/x/sys/unix"
)

// Priorities of pktfate's netfilter programs: the first and the last a BPF
// program may take (INT_MIN and INT_MAX are reserved by the kernel), so
// every rule of every table runs between them.
const (
	nfPriorityFirst = math.MinInt32 + 1
	nfPriorityLast  = math.MaxInt32 - 1
)

var (
	nfFamilies = []link.NetfilterProtocolFamily{link.NetfilterProtoIPv4, link.NetfilterProtoIPv6}
	nfHooks    = []link.NetfilterInetHook{
		link.NetfilterInetPreRouting, link.NetfilterInetLocalIn, link.NetfilterInetForward,
		link.NetfilterInetLocalOut, link.NetfilterInetPostRouting,
	}
)

// NetfilterLinksSupported returns nil when the kernel has BPF netfilter
// programs (6.4 and later), or an error wrapping ebpf.ErrNotSupported.
func NetfilterLinksSupported() error {
	if err := features.HaveProgramType(ebpf.Netfilter); err != nil {
		return fmt.Errorf("BPF netfilter programs (kernel 6.4+): %w", err)
	}
	return nil
}

// Netfilter attribution methods.
const (
	// NetfilterLinks uses BPF netfilter programs (6.4+), in the network
	// namespaces they are attached in.
	NetfilterLinks = "links"
	// NetfilterFexit uses fentry/fexit on nf_hook_slow (needs fentry), all netns.
	NetfilterFexit = "fexit"
)

// FexitSupported returns nil when fexit programs attach to nf_hook_slow,
// or an error wrapping ebpf.ErrNotSupported (no BPF trampolines, as on
// kernels built without fentry support).
func FexitSupported() error { return fexitProbe() }

// fexitProbe runs the probe once per process: the answer does not change,
// and Select and Start both ask.
var fexitProbe = sync.OnceValue(func() error {
	spec := &ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFExit,
		AttachTo:     "nf_hook_slow",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}
	// As Start does before its loads: on kernels that still charge BPF
	// memory to RLIMIT_MEMLOCK, a probe failing on it would say fentry is
	// missing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}
	// Loaded as a collection: with the shared kernel BTF, which finding
	// nf_hook_slow would otherwise read and decode once more.
	kernel, _ := KernelBTF()
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe": spec}}, *collectionOptions(kernel))
	if err != nil {
		return fmt.Errorf("loading an fexit program on nf_hook_slow: %w", notSupported(err))
	}
	prog := coll.DetachProgram("probe")
	coll.Close()
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching an fexit program to nf_hook_slow: %w", notSupported(err))
	}
	return l.Close()
})

// NetfilterMethodAvailable returns the netfilter attribution method this
// kernel supports, the better first: fexit on nf_hook_slow, which brackets
// the chain of every family, hook, priority and network namespace (and
// costs nothing where no netfilter hook is registered), else BPF netfilter
// links (6.4+), which register hooks of their own in each namespace and
// bracket only IPv4 and IPv6 chains between priorities INT_MIN+1 and
// INT_MAX-1. Otherwise an error wrapping ebpf.ErrNotSupported.
func NetfilterMethodAvailable() (string, error) {
	ferr := FexitSupported()
	if ferr == nil {
		return NetfilterFexit, nil
	}
	lerr := NetfilterLinksSupported()
	if lerr == nil {
		return NetfilterLinks, nil
	}
	return "", fmt.Errorf("no way to attribute drops to netfilter hooks: %w; %w", ferr, lerr)
}

// NetfilterBlindness says why a drop with reason NETFILTER_DROP that the
// method in use did not see inside any chain escaped it (net/netfilter/
// nf_bpf_link.c: links take NFPROTO_IPV4 and NFPROTO_IPV6 hooks below
// NF_INET_NUMHOOKS only, and refuse NF_IP_PRI_FIRST and NF_IP_PRI_LAST).
func NetfilterBlindness(method string) string {
	switch method {
	case NetfilterLinks:
		return "this kernel's BPF netfilter links bracket only ipv4 and ipv6 chains between priorities INT_MIN+1 and INT_MAX-1 " +
			"(no link type for the bridge, arp and netdev families or inet ingress; a chain at INT_MIN runs before the first link, " +
			"one at INT_MAX, such as conntrack's confirm, after the last): the drop was in such a chain"
	case NetfilterFexit:
		return "freed with NETFILTER_DROP outside any hook's chain (a verdict returned later, e.g. by an NFQUEUE reader)"
	}
	return ""
}

type nfLinkObjects struct {
	Enter *ebpf.Program `ebpf:"nf_enter"`
	Exit  *ebpf.Program `ebpf:"nf_exit"`
}

type nfFexitObjects struct {
	Enter *ebpf.Program `ebpf:"nf_hook_slow_enter"`
	Exit  *ebpf.Program `ebpf:"nf_hook_slow_exit"`
}

// attachNetfilter loads the netfilter programs against the already loaded
// maps and attaches them with the configured method, or the best the
// kernel offers: links, else fexit.
func (s *EBPF) attachNetfilter(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	nfOpts := *opts
	nfOpts.MapReplacements = s.mapReplacements()
	method := s.cfg.NetfilterMethod
	if method == "" {
		var err error
		if method, err = NetfilterMethodAvailable(); err != nil {
			return err
		}
	}
	switch method {
	case NetfilterLinks:
		if err := NetfilterLinksSupported(); err != nil {
			return err
		}
		s.NetfilterMethod = method
		return s.attachNetfilterLinks(spec, &nfOpts)
	case NetfilterFexit:
		s.NetfilterMethod = method
		return s.attachNetfilterFexit(spec, &nfOpts)
	}
	return fmt.Errorf("unknown netfilter attribution method %q: use %q or %q", method, NetfilterLinks, NetfilterFexit)
}

func (s *EBPF) attachNetfilterFexit(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var o nfFexitObjects
	if err := spec.LoadAndAssign(&o, opts); err != nil {
		return fmt.Errorf("loading fentry/fexit programs on nf_hook_slow (the kernel needs BPF trampolines; netfilter links need 6.4+): %w",
			notSupported(explainLoadError(err)))
	}
	s.progs = append(s.progs, o.Enter, o.Exit)
	// The exit first: attaching the second program rebuilds the
	// trampoline, which takes an RCU-tasks grace period (hundreds of ms
	// in a TCG guest). With the entry first, every chain run meanwhile
	// stayed on the in-flight stack: nf_inflight_full at the start, and
	// entries that a later skb at the same address could take for its own.
	// An exit without its entry finds nothing to take.
	for _, p := range []*ebpf.Program{o.Exit, o.Enter} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attaching %s to nf_hook_slow: %w", p, err)
		}
		s.links = append(s.links, l)
	}
	return nil
}

func (s *EBPF) attachNetfilterLinks(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var o nfLinkObjects
	if err := spec.LoadAndAssign(&o, opts); err != nil {
		return fmt.Errorf("loading netfilter programs: %w", explainLoadError(err))
	}
	s.progs = append(s.progs, o.Enter, o.Exit)
	targets := map[uint32]string{}
	if s.cfg.NetfilterAllNetns && s.cfg.NetfilterNetns == "" {
		var err error
		if targets, err = ListNetns(); err != nil {
			return err
		}
	} else {
		ino, err := netnsInode(s.cfg.NetfilterNetns)
		if err != nil {
			return err
		}
		targets[ino] = s.cfg.NetfilterNetns
	}
	s.nfObjs = o
	s.nfRescan = s.cfg.NetfilterAllNetns && s.cfg.NetfilterNetns == ""
	s.nfNetns = map[uint32]uint64{}
	s.nfLinks = map[uint32][]link.Link{}
	s.nfHeld = map[uint32]time.Time{}
	s.nfWait = map[uint32]string{}
	s.nfKicked = map[uint32]bool{}
	s.nfKick = make(chan struct{}, 1)
	s.nfWatch = map[uint32]io.Closer{}
	for ino, path := range targets {
		if !s.nfChainsIn(path, true) {
			s.nfWaitIn(ino, path) // no chain to bracket (nfchains.go)
			continue
		}
		if err := s.attachNetfilterIn(ino, path, nil); err != nil {
			if len(targets) > 1 && errors.Is(err, os.ErrNotExist) {
				continue // the namespace went away since it was listed
			}
			return err
		}
	}
	return nil
}

// attachNetfilterIn attaches the netfilter programs in the namespace at
// path (inode ino), covered from the time since returns after the attach
// (nil: from the start). On failure nothing stays attached there.
func (s *EBPF) attachNetfilterIn(ino uint32, path string, since func() uint64) error {
	var links []link.Link
	err := netns.DoPath(path, func() error {
		var err error
		links, err = attachNetfilterHere(s.nfObjs)
		return err
	})
	s.nfMu.Lock()
	closed := s.nfClosed
	if err == nil && !closed {
		delete(s.nfWait, ino)
		delete(s.nfKicked, ino)
		s.stopWatch(ino)
		s.nfLinks[ino] = links
		s.nfNetns[ino] = 0
		if since != nil {
			s.nfNetns[ino] = since()
		}
	}
	s.nfMu.Unlock()
	if err != nil || closed {
		for _, l := range links {
			l.Close()
		}
	}
	if err == nil && closed {
		err = errors.New("ebpf source closed")
	}
	return err
}

// nfRescanEvery is how often a capture over every namespace looks for
// namespaces created since (containers come and go).
var nfRescanEvery = time.Second // a variable for tests only

// nfHeldRecheck is how long a namespace found held only by another
// process's descriptor is kept before it is looked for again.
const nfHeldRecheck = 30 * time.Second

// rescanNetns attaches the netfilter programs in namespaces created since
// the last look; a namespace that cannot be entered (gone already) is
// skipped. The scan reads mounts and processes, not every open file: a
// namespace held only by a descriptor is found at the start, not later.
//
// It also releases the links of namespaces that went away. The kernel's
// netfilter link holds a reference on its namespace (bpf_nf_link_attach:
// get_net_track), so without this a deleted namespace, its interfaces
// (a container's veth) and 20 descriptors of ours would live as long as
// the capture. A namespace that no mount or process names any more is
// looked for among every process's descriptors before it is let go (and
// then not again for nfHeldRecheck); let go, it is no longer covered.
func (s *EBPF) rescanNetns() {
	targets, err := listNetns(false)
	if err != nil {
		s.nfRescanFailed(fmt.Errorf("listing network namespaces: %w", err))
		return
	}
	for ino, path := range targets {
		s.nfMu.Lock()
		_, known := s.nfNetns[ino]
		_, waiting := s.nfWait[ino]
		s.nfMu.Unlock()
		if !known && !waiting {
			s.nfWaitIn(ino, path) // attached below if it has a chain
		}
	}
	now := time.Now()
	var missing []uint32
	s.nfMu.Lock()
	for ino := range s.nfWait {
		if _, ok := targets[ino]; !ok {
			delete(s.nfWait, ino) // gone: no links of ours hold it
			delete(s.nfKicked, ino)
			s.stopWatch(ino)
		}
	}
	for ino := range s.nfLinks {
		if _, ok := targets[ino]; !ok && now.Sub(s.nfHeld[ino]) >= nfHeldRecheck {
			missing = append(missing, ino)
		}
	}
	s.nfMu.Unlock()
	if len(missing) == 0 {
		return
	}
	all, err := listNetns(true)
	if err != nil {
		return
	}
	for _, ino := range missing {
		s.nfMu.Lock()
		var links []link.Link
		if _, held := all[ino]; held {
			s.nfHeld[ino] = now
		} else {
			links = s.nfLinks[ino]
			delete(s.nfLinks, ino)
			delete(s.nfNetns, ino)
			delete(s.nfHeld, ino)
		}
		s.nfMu.Unlock()
		for _, l := range links {
			l.Close()
		}
	}
}

// attachWaiting attaches the netfilter links in the namespaces that had no
// chain to bracket, where one is now, or where a drop showed a hook that
// no chain shows (kickNetns).
func (s *EBPF) attachWaiting() {
	s.nfMu.Lock()
	wait := maps.Clone(s.nfWait)
	kicked := maps.Clone(s.nfKicked)
	watched := map[uint32]bool{}
	for ino := range s.nfWatch {
		watched[ino] = true
	}
	s.nfMu.Unlock()
	for ino, path := range wait {
		// A watched namespace's nftables chains announce themselves
		// (nftWatch): only legacy iptables is looked for there.
		if !kicked[ino] && !s.nfChainsIn(path, !watched[ino]) {
			continue
		}
		if err := s.attachNetfilterIn(ino, path, MonoNow); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.nfRescanFailed(err)
			s.nfMu.Lock()
			delete(s.nfWait, ino) // not again every second; nf is blind there, and says so
			s.stopWatch(ino)
			s.nfMu.Unlock()
		}
	}
}

// nfWaitIn keeps a namespace without a chain to bracket, and watches it
// for nftables chains made in it (nftWatch); without the watch (no
// nf_tables), the look every second finds them.
func (s *EBPF) nfWaitIn(ino uint32, path string) {
	w, err := nftWatch(path, &s.nfWatchers, func() { s.kickNetns(ino) })
	s.nfMu.Lock()
	if s.nfClosed {
		s.nfMu.Unlock()
		if err == nil {
			w.Close()
		}
		return
	}
	s.nfWait[ino] = path
	if err == nil {
		s.nfWatch[ino] = w
	}
	s.nfMu.Unlock()
	// A chain made before the watch began sends it nothing: look once
	// now that it listens (without a watch, every look reads nftables).
	if err == nil && s.nfChainsIn(path, true) {
		s.kickNetns(ino)
	}
}

// stopWatch ends the watch of a namespace (s.nfMu is held).
func (s *EBPF) stopWatch(ino uint32) {
	if w := s.nfWatch[ino]; w != nil {
		w.Close()
		delete(s.nfWatch, ino)
	}
}

// nfChainsIn reports whether the namespace at path has a chain for the
// links to bracket, nftables' too when nft (yes when it cannot be entered:
// the attach says why).
func (s *EBPF) nfChainsIn(path string, nft bool) bool {
	has := true
	_ = netns.DoPath(path, func() error {
		has = nfChainsHere(nft)
		return nil
	})
	return has
}

// kickNetns is called for a NETFILTER_DROP that no link bracketed: in a
// namespace waiting for a chain, a hook no chain shows dropped it, and
// the links attach there at once.
func (s *EBPF) kickNetns(ino uint32) {
	s.nfMu.Lock()
	_, waiting := s.nfWait[ino]
	if waiting {
		s.nfKicked[ino] = true
	}
	s.nfMu.Unlock()
	if waiting {
		select {
		case s.nfKick <- struct{}{}:
		default:
		}
	}
}

// attachNetfilterHere attaches the netfilter programs in the calling
// thread's network namespace and returns them, all or none: an nf_enter
// without its nf_exit would take every packet of that hook for one inside
// a chain.
func attachNetfilterHere(o nfLinkObjects) ([]link.Link, error) {
	var links []link.Link
	for _, pf := range nfFamilies {
		for _, hook := range nfHooks {
			for _, p := range []struct {
				prog       *ebpf.Program
				prio, step int32
			}{{o.Exit, nfPriorityLast, -1}, {o.Enter, nfPriorityFirst, 1}} { // the exit first, as for fexit
				l, err := attachNetfilterNear(p.prog, pf, hook, p.prio, p.step)
				if err != nil {
					for _, l := range links {
						l.Close()
					}
					return nil, err
				}
				links = append(links, l)
			}
		}
	}
	return links, nil
}

// nfRescanFailed keeps a failure to attach in a namespace created during
// the capture: the namespace is not covered (nf is blind there, and says
// so), and the user is told (Notices).
func (s *EBPF) nfRescanFailed(err error) {
	s.nfMu.Lock()
	defer s.nfMu.Unlock()
	s.nfRescanErrs++
	s.nfRescanLast = err
}

// Notices implements fate.Noticer: what the user must know that is not a
// loss.
func (s *EBPF) Notices() []string {
	s.nfMu.Lock()
	defer s.nfMu.Unlock()
	var out []string
	if s.KernelFilter != "" {
		out = append(out, s.KernelFilter)
	}
	if s.ListenDropsBlind != "" {
		out = append(out, s.ListenDropsBlind)
	}
	if s.DeliveriesBlind != "" {
		out = append(out, s.DeliveriesBlind)
	}
	if syms := s.decoder.Symbols; syms.Ready() {
		if err := syms.Err(); err != nil {
			out = append(out, fmt.Sprintf("locations are shown as addresses: %v (reading /proc/kallsyms needs CAP_SYSLOG)", err))
		}
	}
	if s.netnsByIif.Load() > 0 {
		out = append(out, "some packets named no network namespace (no device, no socket: fragments purged from a reassembly queue, "+
			"datagrams left in a closed socket) and were placed in a filtered one by the index of the interface they arrived on; "+
			"another namespace's interface of that index would be taken for it: they are marked netns_from \"iif\" (\"?\" in text) "+
			"and counted in ebpf netns_by_iif")
	}
	if s.nfRescanErrs > 0 {
		out = append(out, fmt.Sprintf("netfilter attribution could not attach in network namespaces created during the capture (%d failures, the last: %v): nf is blind in them", s.nfRescanErrs, s.nfRescanLast))
	}
	return out
}

// nfPriorityTries is how many priorities next to the first and the last
// are tried: the kernel refuses two BPF netfilter programs at one priority
// of a hook (EBUSY), which another pktfate (or another tool) may hold.
const nfPriorityTries = 16

// attachNetfilterNear attaches prog at prio, or at the nearest free
// priority in the direction of step.
func attachNetfilterNear(prog *ebpf.Program, pf link.NetfilterProtocolFamily, hook link.NetfilterInetHook, prio, step int32) (link.Link, error) {
	var err error
	for range nfPriorityTries {
		var l link.Link
		l, err = link.AttachNetfilter(link.NetfilterOptions{Program: prog, ProtocolFamily: pf, Hook: hook, Priority: prio})
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		prio += step
	}
	return nil, fmt.Errorf("attaching netfilter program to %s %s at priority %d: %w",
		fate.NetfilterFamily(uint8(pf)), fate.NetfilterHook(uint8(pf), uint8(hook)), prio, err)
}

// netnsInode returns the inode of the network namespace at path ("" is the
// current thread's).
func netnsInode(path string) (uint32, error) {
	if path == "" {
		path = "/proc/thread-self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return uint32(st.Ino), nil
}

// ListNetns returns one path for every network namespace that exists now,
// by inode: the current one, those mounted (`ip netns` names under
// /run/netns, container runtimes' bind mounts), those of every process
// (/proc/PID/ns/net) and those a process holds open (/proc/PID/fd). A
// namespace created later is not in it.
func ListNetns() (map[uint32]string, error) { return listNetns(true) }

// listNetns is ListNetns, with the open descriptors of every process
// searched only when fds is set (the costly part on a busy host).
func listNetns(fds bool) (map[uint32]string, error) {
	cur, err := netnsInode("")
	if err != nil {
		return nil, err
	}
	out := map[uint32]string{cur: ""}
	add := func(path string) {
		if ino, err := netnsInode(path); err == nil {
			if _, ok := out[ino]; !ok {
				out[ino] = path
			}
		}
	}
	for _, m := range nsfsMounts() {
		add(m)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing network namespaces: %w", err)
	}
	for _, p := range procs {
		if c := p.Name()[0]; c < '1' || c > '9' {
			continue
		}
		dir := filepath.Join("/proc", p.Name())
		add(filepath.Join(dir, "ns", "net"))
		if !fds {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range ents {
			path := filepath.Join(dir, "fd", fd.Name())
			if l, err := os.Readlink(path); err == nil && strings.HasPrefix(l, "net:[") {
				add(path)
			}
		}
	}
	return out, nil
}

// nsfsMounts lists the mount points of network namespaces
// (/proc/self/mountinfo: root "net:[INODE]", file system nsfs).
func nsfsMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 5 || sep+1 >= len(f) || f[sep+1] != "nsfs" || !strings.HasPrefix(f[3], "net:[") {
			continue
		}
		out = append(out, strings.ReplaceAll(f[4], "\\040", " "))
	}
	return out
}
