package tracer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/pktfate/pktfate/internal/ringrec"
)

// ReasonsFromBTF reads enum skb_drop_reason (and enum
// skb_drop_reason_subsys, where the kernel has it) from spec. The error
// wraps btf.ErrNotFound when the kernel has no drop reasons (before 5.17).
func ReasonsFromBTF(spec *btf.Spec) (*Reasons, error) {
	var core *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &core); err != nil {
		return nil, fmt.Errorf("looking up enum skb_drop_reason in kernel BTF: %w", err)
	}
	r := ringrec.NewReasons()
	for _, v := range core.Values {
		r.Add(uint32(v.Value), v.Name)
	}
	var sub *btf.Enum
	err := spec.TypeByName("skb_drop_reason_subsys", &sub)
	switch {
	case err == nil:
		for _, v := range sub.Values {
			if strings.HasPrefix(v.Name, "SKB_DROP_REASON_SUBSYS_") {
				r.AddSubsys(uint32(v.Value), v.Name)
			}
		}
	case !errors.Is(err, btf.ErrNotFound):
		return nil, fmt.Errorf("looking up enum skb_drop_reason_subsys in kernel BTF: %w", err)
	}
	return r, nil
}
