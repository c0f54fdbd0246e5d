// Package nlattr walks netlink attributes in place, for the decoders of
// pktfate's two event families (NET_DM alerts, the module's DROP events),
// which run once per event under a flood.
//
// It follows github.com/mdlayher/netlink's AttributeDecoder rules (a
// length past the end, or between 1 and 3, is an error; a length of 0 is
// an empty attribute; the type's NLA_F_NESTED and NLA_F_NET_BYTEORDER bits
// are masked off; a fixed-size value of another size is an error; strings
// lose their trailing NULs) without its copy of every attribute's data.
package nlattr

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// typeMask masks off NLA_F_NESTED and NLA_F_NET_BYTEORDER.
const typeMask = 0x3fff

// Iter walks the attributes of b (New). After Next returns false, Err
// says whether the walk ended at the end or at damage; the first error
// (also a value of the wrong size) sticks.
type Iter struct {
	b   []byte
	typ uint16
	val []byte
	err error
}

// New returns an Iter over the attributes in b.
func New(b []byte) Iter { return Iter{b: b} }

// Next moves to the next attribute.
func (a *Iter) Next() bool {
	if a.err != nil || len(a.b) == 0 {
		return false
	}
	if len(a.b) < 4 {
		a.err = fmt.Errorf("%d bytes left, shorter than an attribute header", len(a.b))
		return false
	}
	l := int(binary.NativeEndian.Uint16(a.b))
	a.typ = binary.NativeEndian.Uint16(a.b[2:]) & typeMask
	switch {
	case l > len(a.b) || (l > 0 && l < 4):
		a.err = fmt.Errorf("attribute %d of length %d with %d bytes left", a.typ, l, len(a.b))
		return false
	case l == 0:
		a.val, a.b = a.b[:0], a.b[4:]
		return true
	}
	a.val = a.b[4:l]
	a.b = a.b[min((l+3)&^3, len(a.b)):]
	return true
}

// Type is the attribute's type, flags masked off.
func (a *Iter) Type() uint16 { return a.typ }

// Value is the attribute's data, valid as long as b.
func (a *Iter) Value() []byte { return a.val }

// Err is the first error of the walk or of a value.
func (a *Iter) Err() error { return a.err }

func (a *Iter) fixed(n int) []byte {
	if a.err == nil && len(a.val) != n {
		a.err = fmt.Errorf("attribute %d is %d bytes, want %d", a.typ, len(a.val), n)
	}
	if a.err != nil {
		return nil
	}
	return a.val
}

// Uint8 is the attribute as a u8 (0 and an error when it is not 1 byte).
func (a *Iter) Uint8() uint8 {
	if b := a.fixed(1); b != nil {
		return b[0]
	}
	return 0
}

// Uint16 is the attribute as a u16 in host order.
func (a *Iter) Uint16() uint16 {
	if b := a.fixed(2); b != nil {
		return binary.NativeEndian.Uint16(b)
	}
	return 0
}

// Uint32 is the attribute as a u32 in host order.
func (a *Iter) Uint32() uint32 {
	if b := a.fixed(4); b != nil {
		return binary.NativeEndian.Uint32(b)
	}
	return 0
}

// Uint64 is the attribute as a u64 in host order.
func (a *Iter) Uint64() uint64 {
	if b := a.fixed(8); b != nil {
		return binary.NativeEndian.Uint64(b)
	}
	return 0
}

// String is the attribute as a string without its trailing NULs: prev
// itself when it holds the same text, so that a decoder reusing its last
// value allocates nothing while the text repeats.
func (a *Iter) String(prev string) string {
	if a.err != nil {
		return ""
	}
	b := bytes.TrimRight(a.val, "\x00")
	if string(b) == prev {
		return prev
	}
	return string(b)
}
