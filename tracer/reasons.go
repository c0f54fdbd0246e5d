package tracer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

const (
	reasonPrefix       = "SKB_DROP_REASON_"
	subsysPrefix       = "SKB_DROP_REASON_SUBSYS_"
	reasonSubsysShift  = 16
	reasonCodeMask     = 1<<reasonSubsysShift - 1
	maxDenseReasonCode = 4096
)

// Reasons names the values of the running kernel's enum skb_drop_reason.
// The numbering differs between kernels (NO_SOCKET is 2 on 6.1 and 3 on
// 6.12), so names always come from the kernel's BTF, never from a table of
// ours. The zero value names nothing; Name then formats raw numbers.
type Reasons struct {
	names   []string          // core reasons, indexed by value
	sparse  map[uint32]string // core reasons too large for names
	subsys  map[uint32]string // enum skb_drop_reason_subsys, by subsystem id
	consume uint32            // value of SKB_CONSUMED, if known
	hasCons bool
}

// ReasonsFromBTF reads enum skb_drop_reason (and enum
// skb_drop_reason_subsys, where the kernel has it) from spec. The error
// wraps btf.ErrNotFound when the kernel has no drop reasons (before 5.17).
func ReasonsFromBTF(spec *btf.Spec) (*Reasons, error) {
	var core *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &core); err != nil {
		return nil, fmt.Errorf("looking up enum skb_drop_reason in kernel BTF: %w", err)
	}
	r := &Reasons{sparse: map[uint32]string{}, subsys: map[uint32]string{}}
	for _, v := range core.Values {
		name, ok := strings.CutPrefix(v.Name, reasonPrefix)
		if !ok {
			// SKB_NOT_DROPPED_YET, SKB_CONSUMED, SKB_DROP_REASON_MAX...
			name = strings.TrimPrefix(v.Name, "SKB_")
		}
		if name == "CONSUMED" {
			r.consume, r.hasCons = uint32(v.Value), true
		}
		r.set(uint32(v.Value), name)
	}
	var sub *btf.Enum
	err := spec.TypeByName("skb_drop_reason_subsys", &sub)
	switch {
	case err == nil:
		for _, v := range sub.Values {
			if name, ok := strings.CutPrefix(v.Name, subsysPrefix); ok {
				r.subsys[uint32(v.Value)] = name
			}
		}
	case !errors.Is(err, btf.ErrNotFound):
		return nil, fmt.Errorf("looking up enum skb_drop_reason_subsys in kernel BTF: %w", err)
	}
	return r, nil
}

func (r *Reasons) set(v uint32, name string) {
	if v < maxDenseReasonCode {
		for uint32(len(r.names)) <= v {
			r.names = append(r.names, "")
		}
		r.names[v] = name
		return
	}
	r.sparse[v] = name
}

// Name returns the kernel's name for a raw drop reason without the
// SKB_DROP_REASON_ prefix. Reasons of a subsystem (the upper 16 bits set,
// 6.6 and later) are named "SUBSYS_<NAME>:<code>"; unknown values "UNKNOWN_<n>".
func (r *Reasons) Name(v uint32) string {
	if v < uint32(len(r.names)) && r.names[v] != "" {
		return r.names[v]
	}
	if n, ok := r.sparse[v]; ok {
		return n
	}
	if id := v >> reasonSubsysShift; id != 0 {
		sub, ok := r.subsys[id]
		if !ok {
			sub = strconv.FormatUint(uint64(id), 10)
		}
		return "SUBSYS_" + sub + ":" + strconv.FormatUint(uint64(v&reasonCodeMask), 10)
	}
	return "UNKNOWN_" + strconv.FormatUint(uint64(v), 10)
}

// Value returns the raw value of a reason name (without prefix) on this
// kernel.
func (r *Reasons) Value(name string) (uint32, bool) {
	if name == "" {
		return 0, false
	}
	for v, n := range r.names {
		if n == name {
			return uint32(v), true
		}
	}
	for v, n := range r.sparse {
		if n == name {
			return v, true
		}
	}
	return 0, false
}

// IsConsumed reports whether v is SKB_CONSUMED: kernels that route
// consume_skb through kfree_skb's tracepoint report it with this reason.
func (r *Reasons) IsConsumed(v uint32) bool {
	return r.hasCons && v == r.consume
}

// Names lists every known core reason name in value order.
func (r *Reasons) Names() []string {
	out := make([]string, 0, len(r.names)+len(r.sparse))
	for _, n := range r.names {
		if n != "" {
			out = append(out, n)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(r.sparse)) {
		out = append(out, r.sparse[v])
	}
	return out
}
