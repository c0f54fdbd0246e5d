package tracer_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/pktfate/pktfate/tracer"
)

// TestReasonsKernels reads the drop reasons of three kernels whose enum
// skb_drop_reason numbers differ (testdata/btf, see its README).
func TestReasonsKernels(t *testing.T) {
	for _, tc := range []struct {
		kernel                 string
		noSocket, notSpecified uint32
		consumed               uint32
		hasConsumed            bool
		max                    uint32
		openvswitch            uint32 // subsystem id, 0 when the kernel has no subsystem enum
	}{
		{kernel: "6.1", noSocket: 2, notSpecified: 1, max: 65},
		{kernel: "6.12", noSocket: 3, notSpecified: 2, consumed: 1, hasConsumed: true, max: 98, openvswitch: 3},
		{kernel: "6.18", noSocket: 3, notSpecified: 2, consumed: 1, hasConsumed: true, max: 128, openvswitch: 2},
	} {
		t.Run(tc.kernel, func(t *testing.T) {
			r := loadReasons(t, tc.kernel)
			value := func(name string) uint32 {
				t.Helper()
				v, ok := r.Value(name)
				if !ok {
					t.Fatalf("no reason %s", name)
				}
				return v
			}
			if got := r.Name(tc.noSocket); got != "NO_SOCKET" {
				t.Errorf("Name(%d) = %q, want NO_SOCKET", tc.noSocket, got)
			}
			if got := value("NO_SOCKET"); got != tc.noSocket {
				t.Errorf("Value(NO_SOCKET) = %d, want %d", got, tc.noSocket)
			}
			if got := value("NOT_SPECIFIED"); got != tc.notSpecified {
				t.Errorf("Value(NOT_SPECIFIED) = %d, want %d", got, tc.notSpecified)
			}
			if got := value("MAX"); got != tc.max {
				t.Errorf("Value(MAX) = %d, want %d", got, tc.max)
			}
			// SKB_NOT_DROPPED_YET and SKB_CONSUMED lose their SKB_ prefix.
			if got := r.Name(0); got != "NOT_DROPPED_YET" {
				t.Errorf("Name(0) = %q, want NOT_DROPPED_YET", got)
			}
			v, ok := r.Value("CONSUMED")
			if ok != tc.hasConsumed || v != tc.consumed {
				t.Errorf("Value(CONSUMED) = %d, %v; want %d, %v", v, ok, tc.consumed, tc.hasConsumed)
			}
			for code := range tc.max + 2 {
				if got, want := r.IsConsumed(code), tc.hasConsumed && code == tc.consumed; got != want {
					t.Errorf("IsConsumed(%d) = %v", code, got)
				}
			}
			if got := r.Name(tc.max + 1); got != "UNKNOWN_"+itoa(tc.max+1) {
				t.Errorf("Name(%d) = %q, want UNKNOWN_%d", tc.max+1, got, tc.max+1)
			}

			// Every name round-trips through Value and Name, in value order.
			names := r.Names()
			if len(names) < int(tc.max) {
				t.Errorf("%d names, want at least %d", len(names), tc.max)
			}
			last := int64(-1)
			for _, n := range names {
				v, ok := r.Value(n)
				if !ok || r.Name(v) != n {
					t.Errorf("%s: Value = %d, %v; Name of it %q", n, v, ok, r.Name(v))
				}
				if int64(v) <= last {
					t.Errorf("Names not in value order at %s (%d after %d)", n, v, last)
				}
				last = int64(v)
			}

			// Reasons of a subsystem carry its id in the upper 16 bits.
			if tc.openvswitch != 0 {
				if got := r.Name(tc.openvswitch<<16 | 5); got != "SUBSYS_OPENVSWITCH:5" {
					t.Errorf("Name(%#x) = %q, want SUBSYS_OPENVSWITCH:5", tc.openvswitch<<16|5, got)
				}
				if got := r.Name(1<<16 | 0x1234); got != "SUBSYS_MAC80211_UNUSABLE:4660" {
					t.Errorf("Name(0x11234) = %q, want SUBSYS_MAC80211_UNUSABLE:4660", got)
				}
				if got := value("SUBSYS_MASK"); got != 0xffff0000 {
					t.Errorf("Value(SUBSYS_MASK) = %#x", got)
				}
			} else if got := r.Name(3<<16 | 5); got != "SUBSYS_3:5" {
				// 6.1 has no subsystem enum: the id is printed as a number.
				t.Errorf("Name(0x30005) = %q, want SUBSYS_3:5", got)
			}
			if got := r.Name(0x7f<<16 | 1); got != "SUBSYS_127:1" {
				t.Errorf("unknown subsystem: Name(0x7f0001) = %q, want SUBSYS_127:1", got)
			}
		})
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func TestReasonsZeroValue(t *testing.T) {
	var r tracer.Reasons
	if got := r.Name(3); got != "UNKNOWN_3" {
		t.Errorf("Name(3) = %q, want UNKNOWN_3", got)
	}
	if got := r.Name(2<<16 | 1); got != "SUBSYS_2:1" {
		t.Errorf("Name(0x20001) = %q, want SUBSYS_2:1", got)
	}
	if _, ok := r.Value("NO_SOCKET"); ok {
		t.Error("zero Reasons knows NO_SOCKET")
	}
	if r.IsConsumed(0) || r.IsConsumed(1) {
		t.Error("zero Reasons recognises CONSUMED")
	}
	if n := r.Names(); len(n) != 0 {
		t.Errorf("Names = %v", n)
	}
}

// specOf marshals types into BTF and reads it back, as a kernel's BTF is read.
func specOf(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: binary.LittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestReasonsNotInBTF(t *testing.T) {
	// A kernel before 5.17 has no enum skb_drop_reason.
	_, err := tracer.ReasonsFromBTF(specOf(t, &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}))
	if !errors.Is(err, btf.ErrNotFound) {
		t.Errorf("err = %v, want one wrapping btf.ErrNotFound", err)
	}
}

func TestReasonsSparseValues(t *testing.T) {
	// Values too large for the dense table, listed out of order.
	spec := specOf(t, &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0},
		{Name: "SKB_DROP_REASON_NO_SOCKET", Value: 7},
		{Name: "SKB_DROP_REASON_SUBSYS_MASK", Value: 0xffff0000},
		{Name: "SKB_DROP_REASON_BIG_B", Value: 90000},
		{Name: "SKB_DROP_REASON_BIG_A", Value: 80000},
	}})
	r, err := tracer.ReasonsFromBTF(spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Names(), []string{"NOT_DROPPED_YET", "NO_SOCKET", "BIG_A", "BIG_B", "SUBSYS_MASK"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	for name, want := range map[string]uint32{"BIG_A": 80000, "BIG_B": 90000, "NO_SOCKET": 7} {
		if v, ok := r.Value(name); !ok || v != want || r.Name(v) != name {
			t.Errorf("Value(%s) = %d, %v; want %d", name, v, ok, want)
		}
	}
	// Unnamed values between named ones are unknown, not empty.
	if got := r.Name(3); got != "UNKNOWN_3" {
		t.Errorf("Name(3) = %q, want UNKNOWN_3", got)
	}
	if _, ok := r.Value(""); ok {
		t.Error(`Value("") found a reason`)
	}
}
