package fate

import (
	"net/netip"
	"time"
)

// Fate says what happened to a packet.
type Fate uint8

const (
	// FateUnknown is the zero value; no source emits it.
	FateUnknown Fate = iota
	// FateDrop means the kernel dropped the packet (kfree_skb).
	FateDrop
	// FateConsume means the kernel freed the packet after processing it normally (consume_skb).
	FateConsume
)

// String returns the name used in text and NDJSON output: "drop" or "consume".
func (f Fate) String() string {
	switch f {
	case FateDrop:
		return "drop"
	case FateConsume:
		return "consume"
	}
	return "unknown"
}

// Event is one observation of a packet being freed.
//
// A Sink receives a pointer to an Event that the source reuses for the next
// record: copy it (Clone) to keep it beyond the call.
type Event struct {
	// Source names the observer ("ebpf").
	Source string
	// Mono is the kernel's CLOCK_MONOTONIC time of the event in nanoseconds.
	Mono uint64
	// Time is Mono converted to wall-clock time.
	Time time.Time
	// CPU the event was observed on.
	CPU uint32
	// Skb is the kernel address of the sk_buff (0 when unknown).
	Skb uint64

	Fate Fate
	// ReasonCode is the raw value of enum skb_drop_reason; its meaning depends on the kernel.
	ReasonCode uint32
	// Reason is the kernel's name without the SKB_DROP_REASON_ prefix ("NO_SOCKET");
	// empty for consumed packets.
	Reason string
	// LocationAddr is the kernel address that freed the packet (0 when unknown).
	LocationAddr uint64
	// Location is LocationAddr symbolised as "func+0xoff".
	Location string

	Netns   uint32
	Ifindex uint32
	Ifname  string
	Mark    uint32
	// Len is skb->len when freed.
	Len uint32
	// EtherType is skb->protocol in host byte order (0x0800 for IPv4).
	EtherType uint16

	// Data holds the first bytes of the packet from its network header
	// (or from its MAC header when MACHeader is set).
	Data []byte
	// MACHeader is set when the kernel had no network header for this packet
	// and Data starts at the MAC header.
	MACHeader bool
	// HadMAC is set when the kernel had a MAC header for this packet
	// (drop_monitor cannot report packets without one). Only the ebpf
	// source knows; others leave it false.
	HadMAC bool

	// Hook is the netfilter hook whose chain the packet was freed in
	// ("LOCAL_IN"), or "" when it was not freed inside netfilter or the
	// netfilter attribution was not running.
	Hook string
	// Family is the netfilter protocol family of Hook ("ipv4", "ipv6").
	Family string
	// Verdict is the netfilter verdict that ended the packet inside Hook:
	// "drop" when it was dropped there, "stolen" when a hook took it and
	// freed it as consumed.
	Verdict string

	// Probe names the kernel hook that saw the event, for sources with
	// several: "kfree_skb", "consume_skb", "read" (a socket copied the
	// packet to user space: skb_copy_datagram_iovec; the packet was
	// delivered), "defer_free" (freed by skb_attempt_defer_free, which
	// has no tracepoint; fentry). Empty for sources with one.
	Probe string
	// Head is the kernel address of the packet's data buffer (skb->head):
	// a clone shares it with the original, so sightings of one Head close
	// in time are of one packet. 0 when unknown.
	Head uint64
	// Iif is the index of the interface the packet arrived on
	// (skb->skb_iif), 0 when it was sent from this host or unknown.
	Iif uint32
	// NetnsFrom and IfindexFrom say where Netns and Ifindex were taken
	// from: "device" (skb->dev), "socket" (skb->sk), "rx_sk" (the
	// receiving socket that dropped it, kfree_skb's argument since 6.11),
	// "task" (the process reading it), "iif" (the interface it arrived on:
	// the device pointer was gone; for Netns: nothing in the skb named it
	// and the netns filter kept it because that namespace has an
	// interface of this index), "" (unknown: Netns or Ifindex is 0).
	NetnsFrom, IfindexFrom string
	// SockFamily is the address family (AF_*) of the socket that held the
	// skb (skb->sk, or rx_sk), 0 when none: 17 (AF_PACKET) is a tap's copy.
	SockFamily uint8
	// Cloned is set when the skb was a clone or had clones (skb->cloned).
	Cloned bool
	// DataShared is set when, after this free, the data buffer is still
	// referenced by another skb: a copy was released, not the packet.
	DataShared bool
	// NotPacket is set for an skb that is not a network packet (no
	// protocol, no MAC header: netlink, unix, vsock buffers), shown only
	// on request.
	NotPacket bool
	// ReasonInferred is set when Reason is pktfate's own, inferred from
	// the freeing location (a refusal the kernel frees with consume_skb):
	// see docs/inferred-reasons.md.
	ReasonInferred bool
	// KernelFiltered is set when the pcap-filter expression already ran
	// where the packet was seen, and matched: user space need not run it
	// again.
	KernelFiltered bool
	// NFBlind, for a drop with reason NETFILTER_DROP that the netfilter
	// attribution did not see inside any chain, says why it could not
	// ("" otherwise).
	NFBlind string

	// Packet is Data decoded.
	Packet Packet
}

// NetnsGuessed is Event.NetnsFrom of a packet whose namespace nothing in
// the skb named: the netns filter placed it by its arrival interface.
const NetnsGuessed = "iif"

// afPacket is AF_PACKET: the family of packet sockets (taps such as
// tcpdump), which get copies of packets.
const afPacket = 17

// CopyReleased reports whether this free released a copy of a packet, not
// the packet: a consume that leaves the data buffer referenced by another
// skb (the original goes on: an xfrm policy's clone of a forwarded ICMP
// error, or the other receivers' clones of a multicast datagram), or one
// held by a packet socket (a tap's copy). A drop is always the packet's:
// some skb of it met its end there. TCP is left out of the first rule:
// a segment sent over loopback or a veth shares its buffer with the
// sender's retransmit queue until it is acknowledged, and its receiver's
// skb is the packet itself.
func (e *Event) CopyReleased() bool {
	if e.Fate != FateConsume {
		return false
	}
	return e.SockFamily == afPacket || (e.DataShared && e.Packet.Proto != "tcp")
}

// Clone returns a deep copy of e that the caller may keep.
func (e *Event) Clone() *Event {
	c := *e
	c.Data = append([]byte(nil), e.Data...)
	return &c
}

// Packet is the summary of the captured headers.
type Packet struct {
	// Proto is the innermost protocol decoded: "udp", "tcp", "icmp", "icmp6",
	// "ipv4", "ipv6", "arp", or "" when nothing could be decoded.
	Proto    string
	Src, Dst netip.Addr
	// Sport and Dport are the transport ports (TCP, UDP) or 0.
	Sport, Dport uint16
	// ICMPType and ICMPCode are set for ICMP and ICMPv6.
	ICMPType, ICMPCode uint8
	// TCPFlags holds the TCP flag bits (FIN=0x01 ... CWR=0x80).
	TCPFlags uint8
	// PayloadLen is the transport payload length from the headers (UDP length minus 8,
	// IP total length minus headers for TCP), 0 when unknown.
	PayloadLen int
}

// Sink receives what a source observes. Its methods are called from the
// source's reading goroutine (sources run concurrently: a Sink is safe for
// concurrent use).
type Sink interface {
	// Event receives one sighting; the Event is only valid during the
	// call.
	Event(e *Event)
	// Lost says that the observer lost events it would have delivered
	// between two monotonic times (ns), say because its socket overran:
	// its silence about packets of that time proves nothing.
	Lost(observer string, from, to uint64)
}

// EventFunc adapts a function to a Sink that takes events and drops the
// loss intervals: for callers that read the source's loss counters
// instead (tests, a single observer).
type EventFunc func(*Event)

// Event implements Sink.
func (f EventFunc) Event(e *Event) { f(e) }

// Lost implements Sink.
func (f EventFunc) Lost(string, uint64, uint64) {}
