package tracer

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
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
// Safe for concurrent use: the sources share one.
type Decoder struct {
	Reasons *Reasons
	Symbols *Symbols
	Clock   Clock
	// Inferred names refusals from their location (nil: none).
	Inferred *InferredReasons
	// NFBlind, when set, says why the netfilter attribution cannot see a
	// NETFILTER_DROP that no chain bracketed (see NetfilterBlindness).
	NFBlind string

	// The last location and interface name: in a drop storm they repeat,
	// and comparing beats a lookup.
	lastLoc atomic.Pointer[locName]
	lastIf  atomic.Pointer[ifName]
	ifnames sync.Map // [16]byte -> string
	nifs    atomic.Int32
}

type locName struct {
	addr uint64
	name string
	// inferred is the reason of a consume at this location (see
	// InferredReasons), "" if none.
	inferred string
}

type ifName struct {
	key  [16]byte
	name string
}

// NewDecoder returns a Decoder naming reasons with r and locations with s
// (either may be nil: raw values are printed instead).
func NewDecoder(r *Reasons, s *Symbols, c Clock) *Decoder {
	if r == nil {
		r = &Reasons{}
	}
	return &Decoder{Reasons: r, Symbols: s, Clock: c, Inferred: DefaultInferredReasons()}
}

// Fork returns a Decoder naming reasons and locations like d, with caches
// of its own: each source decodes on its own goroutine.
func (d *Decoder) Fork() *Decoder {
	return NewDecoder(d.Reasons, d.Symbols.Fork(), d.Clock)
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
		if loc.inferred != "" {
			ev.Fate, ev.Reason, ev.ReasonInferred = fate.FateDrop, loc.inferred, true
		}
	case kindKfree:
		ev.Probe = "kfree_skb"
		if d.Reasons.IsConsumed(ev.ReasonCode) {
			ev.Fate, ev.Reason = fate.FateConsume, ""
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
	if l := d.lastLoc.Load(); l != nil && l.addr == addr {
		return l
	}
	l := &locName{addr: addr, name: d.Symbols.Format(addr)}
	if addr != 0 && d.Inferred != nil {
		l.inferred = d.Inferred.Lookup(fate.Function(l.name))
	}
	d.lastLoc.Store(l)
	return l
}

func (d *Decoder) ifname(b []byte) string {
	var key [16]byte
	copy(key[:], b)
	if l := d.lastIf.Load(); l != nil && l.key == key {
		return l.name
	}
	var s string
	if v, ok := d.ifnames.Load(key); ok {
		s = v.(string)
	} else {
		n := 0
		for n < len(key) && key[n] != 0 {
			n++
		}
		s = string(key[:n])
		if d.nifs.Load() < 4096 {
			d.ifnames.Store(key, s)
			d.nifs.Add(1)
		}
	}
	d.lastIf.Store(&ifName{key: key, name: s})
	return s
}
