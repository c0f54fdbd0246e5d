package tracer

import (
	"unsafe"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
)

// The ebpf source's records are decoded by internal/ringrec, which links
// no kernel code: pktfate report decodes a raw capture's records with it.
// These names keep tracer's API.
type (
	Decoder         = ringrec.Decoder
	Reasons         = ringrec.Reasons
	Symbols         = ringrec.Symbols
	Clock           = ringrec.Clock
	InferredReasons = ringrec.InferredReasons
)

var (
	NewDecoder             = ringrec.NewDecoder
	NewClock               = ringrec.NewClock
	FixedClock             = ringrec.FixedClock
	MonoNow                = ringrec.MonoNow
	LoadKallsyms           = ringrec.LoadKallsyms
	LoadKallsymsAsync      = ringrec.LoadKallsymsAsync
	ParseKallsyms          = ringrec.ParseKallsyms
	NewInferredReasons     = ringrec.NewInferredReasons
	DefaultInferredReasons = ringrec.DefaultInferredReasons
)

const (
	// MaxSnapLen is the most packet bytes one event can carry.
	MaxSnapLen = ringrec.MaxSnapLen
	// ReasonListenDrop is a SYN a listener refused (see ringrec).
	ReasonListenDrop = ringrec.ReasonListenDrop
)

func decodePacket(p *fate.Packet, etherType uint16, data []byte, mac bool) {
	fate.DecodePacket(p, etherType, data, mac)
}

// ringrec writes out the layout of struct event (bpf/skbfate.c); each
// pair below fails to compile when ringrec's offset differs from the
// bpf2go type's in either direction (a negative uintptr constant is an
// error).
const (
	_, _ = ringrec.OffTs - unsafe.Offsetof(skbfateEvent{}.Ts), unsafe.Offsetof(skbfateEvent{}.Ts) - ringrec.OffTs
	_, _ = ringrec.OffSkb - unsafe.Offsetof(skbfateEvent{}.Skb), unsafe.Offsetof(skbfateEvent{}.Skb) - ringrec.OffSkb
	_, _ = ringrec.OffLocation - unsafe.Offsetof(skbfateEvent{}.Location), unsafe.Offsetof(skbfateEvent{}.Location) - ringrec.OffLocation
	_, _ = ringrec.OffHead - unsafe.Offsetof(skbfateEvent{}.Head), unsafe.Offsetof(skbfateEvent{}.Head) - ringrec.OffHead
	_, _ = ringrec.OffReason - unsafe.Offsetof(skbfateEvent{}.Reason), unsafe.Offsetof(skbfateEvent{}.Reason) - ringrec.OffReason
	_, _ = ringrec.OffNetns - unsafe.Offsetof(skbfateEvent{}.Netns), unsafe.Offsetof(skbfateEvent{}.Netns) - ringrec.OffNetns
	_, _ = ringrec.OffIfindex - unsafe.Offsetof(skbfateEvent{}.Ifindex), unsafe.Offsetof(skbfateEvent{}.Ifindex) - ringrec.OffIfindex
	_, _ = ringrec.OffIif - unsafe.Offsetof(skbfateEvent{}.Iif), unsafe.Offsetof(skbfateEvent{}.Iif) - ringrec.OffIif
	_, _ = ringrec.OffMark - unsafe.Offsetof(skbfateEvent{}.Mark), unsafe.Offsetof(skbfateEvent{}.Mark) - ringrec.OffMark
	_, _ = ringrec.OffLen - unsafe.Offsetof(skbfateEvent{}.Len), unsafe.Offsetof(skbfateEvent{}.Len) - ringrec.OffLen
	_, _ = ringrec.OffCPU - unsafe.Offsetof(skbfateEvent{}.Cpu), unsafe.Offsetof(skbfateEvent{}.Cpu) - ringrec.OffCPU
	_, _ = ringrec.OffProtocol - unsafe.Offsetof(skbfateEvent{}.Protocol), unsafe.Offsetof(skbfateEvent{}.Protocol) - ringrec.OffProtocol
	_, _ = ringrec.OffCapLen - unsafe.Offsetof(skbfateEvent{}.CapLen), unsafe.Offsetof(skbfateEvent{}.CapLen) - ringrec.OffCapLen
	_, _ = ringrec.OffFlags - unsafe.Offsetof(skbfateEvent{}.Flags), unsafe.Offsetof(skbfateEvent{}.Flags) - ringrec.OffFlags
	_, _ = ringrec.OffKind - unsafe.Offsetof(skbfateEvent{}.Kind), unsafe.Offsetof(skbfateEvent{}.Kind) - ringrec.OffKind
	_, _ = ringrec.OffNfHook - unsafe.Offsetof(skbfateEvent{}.NfHook), unsafe.Offsetof(skbfateEvent{}.NfHook) - ringrec.OffNfHook
	_, _ = ringrec.OffNfPf - unsafe.Offsetof(skbfateEvent{}.NfPf), unsafe.Offsetof(skbfateEvent{}.NfPf) - ringrec.OffNfPf
	_, _ = ringrec.OffSkFamily - unsafe.Offsetof(skbfateEvent{}.SkFamily), unsafe.Offsetof(skbfateEvent{}.SkFamily) - ringrec.OffSkFamily
	_, _ = ringrec.OffNetnsFrom - unsafe.Offsetof(skbfateEvent{}.NetnsFrom), unsafe.Offsetof(skbfateEvent{}.NetnsFrom) - ringrec.OffNetnsFrom
	_, _ = ringrec.OffIfFrom - unsafe.Offsetof(skbfateEvent{}.IfFrom), unsafe.Offsetof(skbfateEvent{}.IfFrom) - ringrec.OffIfFrom
	_, _ = ringrec.OffIfname - unsafe.Offsetof(skbfateEvent{}.Ifname), unsafe.Offsetof(skbfateEvent{}.Ifname) - ringrec.OffIfname
	_, _ = ringrec.OffData - unsafe.Offsetof(skbfateEvent{}.Data), unsafe.Offsetof(skbfateEvent{}.Data) - ringrec.OffData
	_, _ = ringrec.EventSize - unsafe.Sizeof(skbfateEvent{}), unsafe.Sizeof(skbfateEvent{}) - ringrec.EventSize
)
