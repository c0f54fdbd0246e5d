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
	offTs       = unsafe.Offsetof(skbfateEvent{}.Ts)
	offSkb      = unsafe.Offsetof(skbfateEvent{}.Skb)
	offLocation = unsafe.Offsetof(skbfateEvent{}.Location)
	offReason   = unsafe.Offsetof(skbfateEvent{}.Reason)
	offNetns    = unsafe.Offsetof(skbfateEvent{}.Netns)
	offIfindex  = unsafe.Offsetof(skbfateEvent{}.Ifindex)
	offMark     = unsafe.Offsetof(skbfateEvent{}.Mark)
	offLen      = unsafe.Offsetof(skbfateEvent{}.Len)
	offCPU      = unsafe.Offsetof(skbfateEvent{}.Cpu)
	offProtocol = unsafe.Offsetof(skbfateEvent{}.Protocol)
	offCapLen   = unsafe.Offsetof(skbfateEvent{}.CapLen)
	offKind     = unsafe.Offsetof(skbfateEvent{}.Kind)
	offFlags    = unsafe.Offsetof(skbfateEvent{}.Flags)
	offNfHook   = unsafe.Offsetof(skbfateEvent{}.NfHook)
	offNfPf     = unsafe.Offsetof(skbfateEvent{}.NfPf)
	offIfname   = unsafe.Offsetof(skbfateEvent{}.Ifname)
	offData     = unsafe.Offsetof(skbfateEvent{}.Data)

	// MaxSnapLen is the most packet bytes one event can carry.
	MaxSnapLen = len(skbfateEvent{}.Data)

	kindKfree   = 0
	kindConsume = 1

	flagNetwork     = 1 << 0
	flagMAC         = 1 << 1
	flagHasLocation = 1 << 2
	flagNF          = 1 << 3
	flagMACSet      = 1 << 4
)

// Decoder turns raw ring-buffer records of the ebpf source into Events.
// Not safe for concurrent use: it reuses its buffers and caches names.
type Decoder struct {
	Reasons *Reasons
	Symbols *Symbols
	Clock   Clock

	pkt     *packetDecoder
	ifnames map[[16]byte]string
	// The previous record's location and interface name: in a drop storm
	// they repeat, and comparing beats a map lookup.
	lastLoc     uint64
	lastLocName string
	lastIf      [16]byte
	lastIfName  string
	haveLastIf  bool
}

// NewDecoder returns a Decoder naming reasons with r and locations with s
// (either may be nil: raw values are printed instead).
func NewDecoder(r *Reasons, s *Symbols, c Clock) *Decoder {
	if r == nil {
		r = &Reasons{}
	}
	return &Decoder{Reasons: r, Symbols: s, Clock: c, pkt: newPacketDecoder(), ifnames: map[[16]byte]string{}}
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
	flags := raw[offFlags]

	ev.Source = "ebpf"
	ev.Mono = le.Uint64(raw[offTs:])
	ev.Time = d.Clock.Wall(ev.Mono)
	ev.CPU = le.Uint32(raw[offCPU:])
	ev.Skb = le.Uint64(raw[offSkb:])
	ev.ReasonCode = le.Uint32(raw[offReason:])
	ev.LocationAddr = le.Uint64(raw[offLocation:])
	ev.Netns = le.Uint32(raw[offNetns:])
	ev.Ifindex = le.Uint32(raw[offIfindex:])
	ev.Mark = le.Uint32(raw[offMark:])
	ev.Len = le.Uint32(raw[offLen:])
	// skb->protocol is big endian in the kernel.
	ev.EtherType = binary.BigEndian.Uint16(raw[offProtocol:])
	ev.Data = raw[offData : int(offData)+capLen]
	ev.MACHeader = flags&flagMAC != 0
	ev.HadMAC = flags&flagMACSet != 0

	switch {
	case kind == kindConsume:
		ev.Fate, ev.Reason = fate.FateConsume, ""
	case kind == kindKfree && d.Reasons.IsConsumed(ev.ReasonCode):
		ev.Fate, ev.Reason = fate.FateConsume, ""
	case kind == kindKfree:
		ev.Fate, ev.Reason = fate.FateDrop, d.Reasons.Name(ev.ReasonCode)
	default:
		return fmt.Errorf("record has unknown kind %d", kind)
	}
	ev.Hook, ev.Family, ev.Verdict = "", "", ""
	if flags&flagNF != 0 {
		ev.Hook, ev.Family = fate.NetfilterHook(raw[offNfHook]), fate.NetfilterFamily(raw[offNfPf])
		ev.Verdict = "drop"
		if ev.Fate == fate.FateConsume {
			ev.Verdict = "stolen"
		}
	}
	if ev.LocationAddr != d.lastLoc || d.lastLocName == "" {
		d.lastLoc, d.lastLocName = ev.LocationAddr, d.Symbols.Format(ev.LocationAddr)
	}
	ev.Location = d.lastLocName
	ev.Ifname = d.ifname(raw[offIfname : offIfname+16])
	if flags&(flagNetwork|flagMAC) != 0 {
		d.pkt.decode(&ev.Packet, ev.EtherType, ev.Data, ev.MACHeader)
	} else {
		ev.Packet = fate.Packet{}
	}
	return nil
}

func (d *Decoder) ifname(b []byte) string {
	var key [16]byte
	copy(key[:], b)
	if d.haveLastIf && key == d.lastIf {
		return d.lastIfName
	}
	if s, ok := d.ifnames[key]; ok {
		d.lastIf, d.lastIfName, d.haveLastIf = key, s, true
		return s
	}
	n := 0
	for n < len(key) && key[n] != 0 {
		n++
	}
	s := string(key[:n])
	if len(d.ifnames) < 4096 {
		d.ifnames[key] = s
	}
	return s
}
