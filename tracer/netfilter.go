package tracer

import (
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	vnetns "github.com/vishvananda/netns"
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

type nfObjects struct {
	Enter *ebpf.Program `ebpf:"nf_enter"`
	Exit  *ebpf.Program `ebpf:"nf_exit"`
}

// attachNetfilter loads nf_enter/nf_exit against the already loaded maps
// and links them to every inet hook of both families in the configured
// network namespace.
func (s *EBPF) attachNetfilter(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	if err := NetfilterLinksSupported(); err != nil {
		return err
	}
	nfOpts := *opts
	nfOpts.MapReplacements = map[string]*ebpf.Map{
		skbfateMapInflight: s.maps.Inflight,
		skbfateMapCounters: s.maps.Counters,
		skbfateMapEvents:   s.maps.Events,
	}
	var o nfObjects
	if err := spec.LoadAndAssign(&o, &nfOpts); err != nil {
		return fmt.Errorf("loading netfilter programs: %w", explainLoadError(err))
	}
	s.progs = append(s.progs, o.Enter, o.Exit)
	return inNetns(s.cfg.NetfilterNetns, func() error {
		for _, pf := range nfFamilies {
			for _, hook := range nfHooks {
				for _, p := range []struct {
					prog *ebpf.Program
					prio int32
				}{{o.Enter, nfPriorityFirst}, {o.Exit, nfPriorityLast}} {
					l, err := link.AttachNetfilter(link.NetfilterOptions{
						Program: p.prog, ProtocolFamily: pf, Hook: hook, Priority: p.prio,
					})
					if err != nil {
						return fmt.Errorf("attaching netfilter program to %s %s at priority %d: %w",
							NetfilterFamily(uint8(pf)), NetfilterHook(uint8(hook)), p.prio, err)
					}
					s.links = append(s.links, l)
				}
			}
		}
		return nil
	})
}

// inNetns runs f on a thread inside the network namespace at path ("" runs
// it where we are).
func inNetns(path string, f func() error) error {
	if path == "" {
		return f()
	}
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return fmt.Errorf("opening current network namespace: %w", err)
	}
	defer orig.Close()
	if err := vnetns.Set(target); err != nil {
		return fmt.Errorf("entering network namespace %s: %w", path, err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		runtime.LockOSThread() // leave this thread to die with the goroutine
		return errors.Join(ferr, fmt.Errorf("leaving network namespace %s: %w", path, err))
	}
	return ferr
}
