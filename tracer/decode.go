package tracer

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/pktfate/pktfate/fate"
)

// Offsets of struct event (bpf/skbfate.c), taken from the bpf2go-generated
// type so that C and Go share one definition.
const (
	offTs        = unsafe.Offsetof(skbfateEvent{}.Ts)
	offSkb       = unsafe.Offsetof(skbfateEvent{}.Skb)
	offLocation  = unsafe.Offsetof(skbfateEvent{}.Location)
	offHead      = unsafe.Offsetof(skbfateEvent{}.Head)
	offReason    = unsafe.Offsetof(skbfateEvent{}.Reason)
	offNetns     = unsafe.Offsetof(skbfateEvent{}.Netns)
	offIfindex   = unsafe.Offsetof(skbfateEvent{}.Ifindex)
	offIif       = unsafe.Offsetof(skbfateEvent{}.Iif)
	offMark      = unsafe.Offsetof(skbfateEvent{}.Mark)
	offLen       = unsafe.Offsetof(skbfateEvent{}.Len)
	offCPU       = unsafe.Offsetof(skbfateEvent{}.Cpu)
	offProtocol  = unsafe.Offsetof(skbfateEvent{}.Protocol)
	offCapLen    = unsafe.Offsetof(skbfateEvent{}.CapLen)
	offFlags     = unsafe.Offsetof(skbfateEvent{}.Flags)
	offKind      = unsafe.Offsetof(skbfateEvent{}.Kind)
	offNfHook    = unsafe.Offsetof(skbfateEvent{}.NfHook)
	offNfPf      = unsafe.Offsetof(skbfateEvent{}.NfPf)
	offSkFamily  = unsafe.Offsetof(skbfateEvent{}.SkFamily)
	offNetnsFrom = unsafe.Offsetof(skbfateEvent{}.NetnsFrom)
	offIfFrom    = unsafe.Offsetof(skbfateEvent{}.IfFrom)
	offIfname    = unsafe.Offsetof(skbfateEvent{}.Ifname)
	offData      = unsafe.Offsetof(skbfateEvent{}.Data)

	// MaxSnapLen is the most packet bytes one event can carry.
	MaxSnapLen = len(skbfateEvent{}.Data)

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
	if len(raw) < int(offData) {
		return fmt.Errorf("record of %d bytes is shorter than the %d-byte event header", len(raw), offData)
	}
	le := binary.LittleEndian
	capLen := int(le.Uint16(raw[offCapLen:]))
	if capLen > len(raw)-int(offData) {
		return fmt.Errorf("record claims %d packet bytes but carries %d", capLen, len(raw)-int(offData))
	}
	kind := raw[offKind]
	flags := le.Uint16(raw[offFlags:])

	ev.Source = "ebpf"
	ev.Mono = le.Uint64(raw[offTs:])
	ev.Time = d.Clock.Wall(ev.Mono)
	ev.CPU = le.Uint32(raw[offCPU:])
	ev.Skb = le.Uint64(raw[offSkb:])
	ev.Head = le.Uint64(raw[offHead:])
	ev.ReasonCode = le.Uint32(raw[offReason:])
	ev.LocationAddr = le.Uint64(raw[offLocation:])
	ev.Netns = le.Uint32(raw[offNetns:])
	ev.Ifindex = le.Uint32(raw[offIfindex:])
	ev.Iif = le.Uint32(raw[offIif:])
	ev.Mark = le.Uint32(raw[offMark:])
	ev.Len = le.Uint32(raw[offLen:])
	// skb->protocol is big endian in the kernel.
	ev.EtherType = binary.BigEndian.Uint16(raw[offProtocol:])
	ev.Data = raw[offData : int(offData)+capLen]
	ev.MACHeader = flags&flagMAC != 0
	ev.HadMAC = flags&flagMACSet != 0
	ev.NetnsFrom = whereName(raw[offNetnsFrom])
	ev.IfindexFrom = whereName(raw[offIfFrom])
	ev.SockFamily = raw[offSkFamily]
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
		pf := raw[offNfPf]
		ev.Hook, ev.Family = fate.NetfilterHook(pf, raw[offNfHook]), fate.NetfilterFamily(pf)
		ev.Verdict = "drop"
		if ev.Fate == fate.FateConsume {
			ev.Verdict = "stolen"
		}
	} else if d.NFBlind != "" && ev.Fate == fate.FateDrop && ev.Reason == "NETFILTER_DROP" {
		ev.NFBlind = d.NFBlind
	}
	ev.Ifname = d.ifname(raw[offIfname : offIfname+16])
	if flags&(flagNetwork|flagMAC) != 0 {
		decodePacket(&ev.Packet, ev.EtherType, ev.Data, ev.MACHeader)
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
