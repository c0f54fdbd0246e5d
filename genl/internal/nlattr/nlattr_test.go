package nlattr

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

func attr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, 4+len(val)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(val)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestWalk(t *testing.T) {
	u32 := binary.NativeEndian.AppendUint32(nil, 7)
	b := bytes.Join([][]byte{
		attr(1, u32),
		attr(2|1<<15, []byte("eth0\x00\x00")), // NLA_F_NESTED masked off
		attr(3, nil),
		attr(4, []byte{9}),
	}, nil)
	a := New(b)
	var got []uint16
	for a.Next() {
		got = append(got, a.Type())
		switch a.Type() {
		case 1:
			if v := a.Uint32(); v != 7 {
				t.Errorf("u32 %d", v)
			}
		case 2:
			if s := a.String(""); s != "eth0" {
				t.Errorf("string %q", s)
			}
		case 3:
			if len(a.Value()) != 0 {
				t.Errorf("empty attribute has %d bytes", len(a.Value()))
			}
		case 4:
			if v := a.Uint8(); v != 9 {
				t.Errorf("u8 %d", v)
			}
		}
	}
	if a.Err() != nil || len(got) != 4 || got[1] != 2 {
		t.Errorf("types %v, err %v", got, a.Err())
	}
}

func TestDamage(t *testing.T) {
	for name, b := range map[string][]byte{
		"length past the end": {20, 0, 1, 0, 1, 2, 3, 4},
		"length 2":            {2, 0, 1, 0},
		"short header":        append(attr(1, []byte{1, 2, 3, 4}), 1, 0),
	} {
		a := New(b)
		for a.Next() {
		}
		if a.Err() == nil {
			t.Errorf("%s: no error", name)
		}
	}
	a := New(attr(1, []byte{1, 2}))
	if !a.Next() || a.Uint32() != 0 || a.Err() == nil || a.Next() {
		t.Errorf("a u32 of 2 bytes: err %v", a.Err())
	}
}

func TestStringReusesPrev(t *testing.T) {
	a := New(attr(1, []byte("__udp4_lib_rcv+0x545/0xd50\x00")))
	a.Next()
	prev := a.String("")
	if n := testing.AllocsPerRun(100, func() { _ = a.String(prev) }); n != 0 {
		t.Errorf("String of unchanged text allocated %v times", n)
	}
}

// FuzzAgainstAttributeDecoder: the walk sees what mdlayher/netlink's
// AttributeDecoder sees, types, values and whether it ends in an error.
func FuzzAgainstAttributeDecoder(f *testing.F) {
	f.Add(bytes.Join([][]byte{attr(1, []byte{1, 2, 3, 4}), attr(2, []byte("x\x00"))}, nil))
	f.Add([]byte{0, 0, 1, 0, 8, 0, 2, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return
		}
		a := New(b)
		for ref.Next() {
			if !a.Next() {
				t.Fatalf("ended early (%v); reference has type %d", a.Err(), ref.Type())
			}
			if a.Type() != ref.Type() || !bytes.Equal(a.Value(), ref.Bytes()) {
				t.Fatalf("type %d value %x, reference %d %x", a.Type(), a.Value(), ref.Type(), ref.Bytes())
			}
		}
		if a.Next() {
			t.Fatalf("walked on past the reference's end")
		}
		if (a.Err() == nil) != (ref.Err() == nil) {
			t.Fatalf("error %v, reference %v", a.Err(), ref.Err())
		}
	})
}
