package ringrec

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/pktfate/pktfate/fate"
)

// event is struct event of bpf/skbfate.c as bpf2go writes it in tracer,
// which checks at compile time that every offset below equals its own.
type event struct {
	Ts        uint64
	Skb       uint64
	Location  uint64
	Head      uint64
	Reason    uint32
	Netns     uint32
	Ifindex   uint32
	Iif       uint32
	Mark      uint32
	Len       uint32
	Cpu       uint32
	Protocol  uint16
	CapLen    uint16
	Flags     uint16
	Kind      uint8
	NfHook    uint8
	NfPf      uint8
	SkFamily  uint8
	NetnsFrom uint8
	IfFrom    uint8
	Ifname    [16]int8
	Data      [256]uint8
}

// Offsets of struct event's fields in a ring record.
const (
	OffTs        = unsafe.Offsetof(event{}.Ts)
	OffSkb       = unsafe.Offsetof(event{}.Skb)
	OffLocation  = unsafe.Offsetof(event{}.Location)
	OffHead      = unsafe.Offsetof(event{}.Head)
	OffReason    = unsafe.Offsetof(event{}.Reason)
	OffNetns     = unsafe.Offsetof(event{}.Netns)
	OffIfindex   = unsafe.Offsetof(event{}.Ifindex)
	OffIif       = unsafe.Offsetof(event{}.Iif)
	OffMark      = unsafe.Offsetof(event{}.Mark)
	OffLen       = unsafe.Offsetof(event{}.Len)
	OffCPU       = unsafe.Offsetof(event{}.Cpu)
	OffProtocol  = unsafe.Offsetof(event{}.Protocol)
	OffCapLen    = unsafe.Offsetof(event{}.CapLen)
	OffFlags     = unsafe.Offsetof(event{}.Flags)
	OffKind      = unsafe.Offsetof(event{}.Kind)
	OffNfHook    = unsafe.Offsetof(event{}.NfHook)
	OffNfPf      = unsafe.Offsetof(event{}.NfPf)
	OffSkFamily  = unsafe.Offsetof(event{}.SkFamily)
	OffNetnsFrom = unsafe.Offsetof(event{}.NetnsFrom)
	OffIfFrom    = unsafe.Offsetof(event{}.IfFrom)
	OffIfname    = unsafe.Offsetof(event{}.Ifname)
	OffData      = unsafe.Offsetof(event{}.Data)

	// MaxSnapLen is the most packet bytes one event can carry.
	MaxSnapLen = len(event{}.Data)
	// EventSize is the size of a whole record.
	EventSize = unsafe.Sizeof(event{})
)

const (
	kindKfree   = 0
	kindConsume = 1
	kindRead    = 2
	kindDefer   = 3

	flagNetwork     = 1 << 0
	flagMAC         = 1 << 1
	flagHasLocation = 1 << 2
	flagNF          = 1 << 3
	flagMACSet      = 1 << 4
	flagCloned      = 1 << 5
	flagShared      = 1 << 6
	flagNotPacket   = 1 << 7
	flagFiltered    = 1 << 8
	flagListenDrop  = 1 << 9
)

// whereFrom names enum where_from (bpf/skbfate.c).
var whereFrom = [...]string{"", "device", "socket", "rx_sk", "task", "iif"}

func whereName(v uint8) string {
	if int(v) < len(whereFrom) {
		return whereFrom[v]
	}
	return "unknown"
}

// Decoder turns raw ring-buffer records of the ebpf source into Events.
// Not safe for concurrent use (its caches are plain): each goroutine gets
// its own Fork, which shares the read-only tables.
type Decoder struct {
	Reasons *Reasons
	Symbols *Symbols
	Clock   Clock
	// Inferred names refusals from their location (nil: none).
	Inferred *InferredReasons
	// NFBlind, when set, says why the netfilter attribution cannot see a
	// NETFILTER_DROP that no chain bracketed (see NetfilterBlindness).
	NFBlind string

	// The last few locations and interface names: in a drop storm they
	// repeat, and a few comparisons beat a lookup (and allocate nothing).
	locs    [8]locName
	nextLoc int
	ifs     [8]ifName
	nextIf  int
	ifnames map[[16]byte]string
}

type locName struct {
	set   bool
	table *InferredReasons // what inferred was looked up in
	addr  uint64
	name  string
	// inferred is the reason of a consume at this location (see
	// InferredReasons), "" if none.
	inferred string
}

type ifName struct {
	set  bool
	key  [16]byte
	name string
}

// NewDecoder returns a Decoder naming reasons with r and locations with s
// (either may be nil: raw values are printed instead).
func NewDecoder(r *Reasons, s *Symbols, c Clock) *Decoder {
	if r == nil {
		r = &Reasons{}
	}
	return &Decoder{Reasons: r, Symbols: s, Clock: c, Inferred: DefaultInferredReasons(), ifnames: map[[16]byte]string{}}
}

// Fork returns a Decoder naming reasons and locations like d, with caches
// of its own: each source decodes on its own goroutine.
func (d *Decoder) Fork() *Decoder {
	f := NewDecoder(d.Reasons, d.Symbols.Fork(), d.Clock)
	f.Inferred, f.NFBlind = d.Inferred, d.NFBlind
	return f
}

// Decode fills ev from one record. ev.Data aliases raw: copy the event
// (Event.Clone) to keep it after raw is reused.
func (d *Decoder) Decode(raw []byte, ev *fate.Event) error {
	if len(raw) < int(OffData) {
		return fmt.Errorf("record of %d bytes is shorter than the %d-byte event header", len(raw), OffData)
	}
	le := binary.LittleEndian
	capLen := int(le.Uint16(raw[OffCapLen:]))
	if capLen > len(raw)-int(OffData) {
		return fmt.Errorf("record claims %d packet bytes but carries %d", capLen, len(raw)-int(OffData))
	}
	kind := raw[OffKind]
	flags := le.Uint16(raw[OffFlags:])

	ev.Source = "ebpf"
	ev.Mono = le.Uint64(raw[OffTs:])
	ev.Time = d.Clock.Wall(ev.Mono)
	ev.CPU = le.Uint32(raw[OffCPU:])
	ev.Skb = le.Uint64(raw[OffSkb:])
	ev.Head = le.Uint64(raw[OffHead:])
	ev.ReasonCode = le.Uint32(raw[OffReason:])
	ev.LocationAddr = le.Uint64(raw[OffLocation:])
	ev.Netns = le.Uint32(raw[OffNetns:])
	ev.Ifindex = le.Uint32(raw[OffIfindex:])
	ev.Iif = le.Uint32(raw[OffIif:])
	ev.Mark = le.Uint32(raw[OffMark:])
	ev.Len = le.Uint32(raw[OffLen:])
	// skb->protocol is big endian in the kernel.
	ev.EtherType = binary.BigEndian.Uint16(raw[OffProtocol:])
	ev.Data = raw[OffData : int(OffData)+capLen]
	ev.MACHeader = flags&flagMAC != 0
	ev.HadMAC = flags&flagMACSet != 0
	ev.NetnsFrom = whereName(raw[OffNetnsFrom])
	ev.IfindexFrom = whereName(raw[OffIfFrom])
	ev.SockFamily = raw[OffSkFamily]
	ev.Cloned = flags&flagCloned != 0
	ev.DataShared = flags&flagShared != 0
	ev.NotPacket = flags&flagNotPacket != 0
	ev.KernelFiltered = flags&flagFiltered != 0
	ev.ReasonInferred = false
	ev.NFBlind = ""

	loc := d.location(ev.LocationAddr)
	ev.Location = loc.name
	switch kind {
	case kindConsume:
		ev.Fate, ev.Reason, ev.Probe = fate.FateConsume, "", "consume_skb"
		if flags&flagListenDrop != 0 {
			ev.Fate, ev.Reason, ev.ReasonInferred = fate.FateDrop, ReasonListenDrop, true
		} else if loc.inferred != "" {
			ev.Fate, ev.Reason, ev.ReasonInferred = fate.FateDrop, loc.inferred, true
		}
	case kindKfree:
		ev.Probe = "kfree_skb"
		if d.Reasons.IsConsumed(ev.ReasonCode) {
			ev.Fate, ev.Reason = fate.FateConsume, ""
			if loc.inferred != "" {
				ev.Fate, ev.Reason, ev.ReasonInferred = fate.FateDrop, loc.inferred, true
			}
		} else {
			ev.Fate, ev.Reason = fate.FateDrop, d.Reasons.Name(ev.ReasonCode)
		}
	case kindRead:
		ev.Fate, ev.Reason, ev.Probe = fate.FateConsume, "", "read"
		ev.Location = "skb_copy_datagram_iovec"
	case kindDefer:
		ev.Fate, ev.Reason, ev.Probe = fate.FateConsume, "", "defer_free"
		ev.Location = "skb_attempt_defer_free"
	default:
		return fmt.Errorf("record has unknown kind %d", kind)
	}
	ev.Hook, ev.Family, ev.Verdict = "", "", ""
	if flags&flagNF != 0 {
		pf := raw[OffNfPf]
		ev.Hook, ev.Family = fate.NetfilterHook(pf, raw[OffNfHook]), fate.NetfilterFamily(pf)
		ev.Verdict = "drop"
		if ev.Fate == fate.FateConsume {
			ev.Verdict = "stolen"
		}
	} else if d.NFBlind != "" && ev.Fate == fate.FateDrop && ev.Reason == "NETFILTER_DROP" {
		ev.NFBlind = d.NFBlind
	}
	ev.Ifname = d.ifname(raw[OffIfname : OffIfname+16])
	if flags&(flagNetwork|flagMAC) != 0 {
		fate.DecodePacket(&ev.Packet, ev.EtherType, ev.Data, ev.MACHeader)
	} else {
		ev.Packet = fate.Packet{}
	}
	return nil
}

func (d *Decoder) location(addr uint64) *locName {
	for i := range d.locs {
		if l := &d.locs[i]; l.set && l.addr == addr && l.table == d.Inferred {
			return l
		}
	}
	l := &d.locs[d.nextLoc]
	d.nextLoc = (d.nextLoc + 1) % len(d.locs)
	*l = locName{addr: addr, name: d.Symbols.Format(addr), set: true, table: d.Inferred}
	if addr != 0 && d.Inferred != nil {
		l.inferred = d.Inferred.Lookup(fate.Function(l.name))
	}
	return l
}

func (d *Decoder) ifname(b []byte) string {
	var key [16]byte
	copy(key[:], b)
	for i := range d.ifs {
		if f := &d.ifs[i]; f.set && f.key == key {
			return f.name
		}
	}
	s, ok := d.ifnames[key]
	if !ok {
		n := 0
		for n < len(key) && key[n] != 0 {
			n++
		}
		s = string(key[:n])
		if len(d.ifnames) >= 4096 {
			clear(d.ifnames) // interfaces come and go in a long capture
		}
		d.ifnames[key] = s
	}
	d.ifs[d.nextIf] = ifName{key: key, name: s, set: true}
	d.nextIf = (d.nextIf + 1) % len(d.ifs)
	return s
}
