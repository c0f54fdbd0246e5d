package tracer

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// kernelBTF is the kernel's BTF, read once per process and shared by every
// collection pktfate loads. Without it each load (the tracepoint programs,
// the fentry programs, the netfilter programs) reads and decodes
// /sys/kernel/btf/vmlinux again to find its attach target, and inflates
// struct sk_buff and all it reaches once more: a quarter of a second of a
// one-CPU machine's time per load, most of pktfate's start.
var kernelBTF struct {
	once  sync.Once
	cache *btf.Cache
	spec  *btf.Spec
	err   error
}

// KernelBTF returns the kernel's BTF (/sys/kernel/btf/vmlinux), loaded on
// the first call. The spec is shared: do not change it.
func KernelBTF() (*btf.Spec, error) {
	k := &kernelBTF
	k.once.Do(func() {
		k.cache = btf.NewCache()
		k.spec, k.err = k.cache.Kernel()
	})
	return k.spec, k.err
}

// collectionOptions returns the options a collection is loaded with
// against kernel: its CO-RE target, and the shared cache when kernel is
// the one KernelBTF returned (a test may pass another).
func collectionOptions(kernel *btf.Spec) *ebpf.CollectionOptions {
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}
	if spec, err := KernelBTF(); err == nil && spec == kernel {
		opts.Cache = kernelBTF.cache
	}
	return opts
}

// notSupported marks err as a missing kernel feature (ebpf.ErrNotSupported)
// on one line: errors.Join would put a newline in the message, which the
// summary's notes then print split.
func notSupported(err error) error { return fmt.Errorf("%w: %w", ebpf.ErrNotSupported, err) }
