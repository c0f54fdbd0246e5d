package ringrec

import (
	"maps"
	"slices"
	"strconv"
	"strings"
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

// NewReasons returns a Reasons naming nothing yet: Add and AddSubsys fill
// it (tracer.ReasonsFromBTF from the kernel's BTF, a raw capture's reader
// from the table its header carries).
func NewReasons() *Reasons {
	return &Reasons{sparse: map[uint32]string{}, subsys: map[uint32]string{}}
}

// Add names value v of enum skb_drop_reason (the enumerator's name, with
// or without the SKB_DROP_REASON_ prefix).
func (r *Reasons) Add(v uint32, enumerator string) {
	name, ok := strings.CutPrefix(enumerator, reasonPrefix)
	if !ok {
		// SKB_NOT_DROPPED_YET, SKB_CONSUMED, SKB_DROP_REASON_MAX...
		name = strings.TrimPrefix(enumerator, "SKB_")
	}
	if name == "CONSUMED" {
		r.consume, r.hasCons = v, true
	}
	r.set(v, name)
}

// AddSubsys names subsystem id of enum skb_drop_reason_subsys (with or
// without the SKB_DROP_REASON_SUBSYS_ prefix).
func (r *Reasons) AddSubsys(id uint32, enumerator string) {
	r.subsys[id] = strings.TrimPrefix(enumerator, subsysPrefix)
}

// Table lists every named value: core reasons (value, name) and
// subsystems (id, name), each in value order, as Add and AddSubsys take
// them back.
func (r *Reasons) Table() (core, subsys []NamedValue) {
	for v, n := range r.names {
		if n != "" {
			core = append(core, NamedValue{uint32(v), n})
		}
	}
	for _, v := range slices.Sorted(maps.Keys(r.sparse)) {
		core = append(core, NamedValue{v, r.sparse[v]})
	}
	for _, v := range slices.Sorted(maps.Keys(r.subsys)) {
		subsys = append(subsys, NamedValue{v, r.subsys[v]})
	}
	return core, subsys
}

// NamedValue is one enumerator: its value and its name.
type NamedValue struct {
	Value uint32 `json:"v"`
	Name  string `json:"n"`
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
