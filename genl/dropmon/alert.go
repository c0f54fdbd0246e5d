package dropmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/pktfate/pktfate/genl/internal/nlattr"
)

// ErrMalformed is wrapped by every error about a message that does not
// follow the NET_DM protocol (truncated, wrong attribute sizes, missing
// attributes the kernel always sends).
var ErrMalformed = errors.New("malformed NET_DM message")

// AlertKind says which of an Alert's fields is valid.
type AlertKind uint8

const (
	// KindNone is the zero value; Read never returns it.
	KindNone AlertKind = iota
	// KindPacket is a packet alert (NET_DM_CMD_PACKET_ALERT): Alert.Packet.
	KindPacket
	// KindSummary is a summary alert (NET_DM_CMD_ALERT): Alert.Summary.
	KindSummary
)

// String returns "packet", "summary" or "none".
func (k AlertKind) String() string {
	switch k {
	case KindPacket:
		return "packet"
	case KindSummary:
		return "summary"
	}
	return "none"
}

// Alert is one message of the events multicast group. Which kind arrives
// depends on the alert mode the session was configured with (CONFIG), which
// is global: a passive session gets whatever mode its owner chose.
//
// Events.Read and ParseMessage reuse an Alert's slices (Payload, Drops, ...)
// for the next message: Clone what you keep.
type Alert struct {
	Kind    AlertKind
	Packet  PacketAlert
	Summary SummaryAlert
}

// PacketAlert is one dropped packet as NET_DM reports it in packet mode.
//
// The kernel clones the skb in its kfree_skb (or devlink trap) probe,
// queues the clone per CPU (at most QueueLen; overflow is counted, see
// Stats) and sends the alert from a kworker, which then frees the clone with
// consume_skb: an eBPF consume_skb probe sees these clones, and the alert
// arrives some time after the drop (Timestamp is the drop time).
//
// NET_DM reports neither the skb's address, nor its mark, nor its network
// namespace: correlate with other observers by time, location, interface
// and payload.
type PacketAlert struct {
	// Origin is OriginSoftware for drops in the kernel's stack and
	// OriginHardware for packets trapped by a device (kernels without the
	// attribute only report software drops).
	Origin Origin
	// PC is the kernel address that freed the packet (the kfree_skb
	// tracepoint's location); software drops only.
	PC uint64
	// Symbol is PC as the kernel printed it with %pS, for example
	// "__udp4_lib_rcv+0x6ba/0xd50" (at most 39 bytes); software drops only.
	Symbol string
	// Reason is the drop reason's name without the SKB_DROP_REASON_ prefix
	// ("NO_SOCKET"), as the kernel sends it (5.18 and later; subsystem
	// reasons since 6.5). Empty when the kernel sends none.
	Reason string
	// Ifindex is the input interface (skb->skb_iif for software drops, the
	// trapping port for hardware drops) in the namespace of the device;
	// 0 when the kernel did not send one.
	Ifindex uint32
	// Ifname is the input interface's name; the kernel sends it for
	// hardware drops only.
	Ifname string
	// Timestamp is the wall-clock time of the drop (CLOCK_REALTIME, ns
	// since the Unix epoch), taken in the probe.
	Timestamp uint64
	// OrigLen is the packet's length from its MAC header when dropped
	// (skb->len after pushing back to the MAC header).
	OrigLen uint32
	// Proto is skb->protocol, the ethertype in host byte order (0x0800 for
	// IPv4); the kernel sends it only with a payload.
	Proto uint16
	// Payload holds the packet from its MAC header, at most TruncLen bytes
	// (the whole packet up to 64 KiB when TruncLen is 0). The kernel skips
	// packets without a MAC header altogether.
	Payload []byte
	// HWTrapGroup and HWTrapName name the devlink trap (hardware drops).
	HWTrapGroup, HWTrapName string
	// FlowActionCookie is the cookie of the tc flow action that trapped
	// the packet, if any (hardware drops).
	FlowActionCookie []byte
}

// Time returns Timestamp as a time.Time.
func (p *PacketAlert) Time() time.Time { return time.Unix(0, int64(p.Timestamp)) }

// Clone returns a deep copy of p.
func (p *PacketAlert) Clone() *PacketAlert {
	c := *p
	c.Payload = append([]byte(nil), p.Payload...)
	c.FlowActionCookie = append([]byte(nil), p.FlowActionCookie...)
	return &c
}

// SummaryAlert is the kernel's summary of recent drops on one CPU (summary
// mode), sent about a second after the first drop it counts. It carries
// no packet, no reason and no time: only where, and how many.
type SummaryAlert struct {
	// Drops lists drop locations with the packets each dropped (at most 64
	// per alert; the kernel stops adding locations after that). A PC of 0
	// stands for drops that a device counted in rx_dropped, noticed in NAPI
	// polling.
	Drops []DropPoint
	// HW lists devlink trap counts, in the hardware summary alerts (Drops is
	// then empty).
	HW []HWDrop
}

// Clone returns a deep copy of s.
func (s *SummaryAlert) Clone() *SummaryAlert {
	return &SummaryAlert{Drops: append([]DropPoint(nil), s.Drops...), HW: append([]HWDrop(nil), s.HW...)}
}

// DropPoint is one location of a summary alert (struct net_dm_drop_point).
type DropPoint struct {
	PC    uint64
	Count uint32
}

// HWDrop is one devlink trap of a hardware summary alert.
type HWDrop struct {
	TrapName string
	Count    uint32
}

// Clone returns a deep copy of a.
func (a *Alert) Clone() *Alert {
	return &Alert{Kind: a.Kind, Packet: *a.Packet.Clone(), Summary: *a.Summary.Clone()}
}

// Header lengths of a netlink message as the kernel sends it.
const (
	nlmsgHeaderLen = 16 // struct nlmsghdr
	genlHeaderLen  = 4  // struct genlmsghdr
)

// ParseMessage decodes one netlink message as read from the events group
// (struct nlmsghdr, struct genlmsghdr, attributes, in host byte order) into
// a, reusing a's slices. It returns the aligned length of the message, so
// that a datagram holding several messages can be walked. Anything
// truncated or malformed returns an error wrapping ErrMalformed; commands
// other than the two alerts return an error wrapping ErrUnexpected.
// Memory use is bounded by len(b).
func ParseMessage(b []byte, a *Alert) (int, error) {
	if len(b) < nlmsgHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes, shorter than a netlink header", ErrMalformed, len(b))
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < nlmsgHeaderLen+genlHeaderLen || n > len(b) {
		return 0, fmt.Errorf("%w: netlink message length %d with %d bytes at hand", ErrMalformed, n, len(b))
	}
	var m genetlink.Message
	if err := m.UnmarshalBinary(b[nlmsgHeaderLen:n]); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	aligned := min((n+3)&^3, len(b))
	return aligned, a.decode(m)
}

// ErrUnexpected is wrapped by the error about a message that is not an alert.
var ErrUnexpected = errors.New("unexpected NET_DM command")

// decode decodes one generic netlink message of the family into a.
func (a *Alert) decode(m genetlink.Message) error {
	var err error
	switch m.Header.Command {
	case cmdPacketAlert:
		a.Kind = KindPacket
		err = parsePacketAlert(m.Data, &a.Packet)
	case cmdAlert:
		a.Kind = KindSummary
		var ad *netlink.AttributeDecoder
		if ad, err = netlink.NewAttributeDecoder(m.Data); err == nil {
			err = parseSummaryAlert(ad, &a.Summary)
		}
	default:
		a.Kind = KindNone
		return fmt.Errorf("%w %d", ErrUnexpected, m.Header.Command)
	}
	if err != nil {
		kind := a.Kind
		a.Kind = KindNone
		if !errors.Is(err, ErrMalformed) {
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return fmt.Errorf("decoding %s alert: %w", kind, err)
	}
	return nil
}

// Bits of the attributes a packet alert carried, for the checks after
// decoding.
const (
	seenPC = 1 << iota
	seenSymbol
	seenTimestamp
	seenOrigLen
	seenProto
	seenPayload
	seenTrapName
	seenTrapGroup
)

// parsePacketAlert decodes the attributes of a NET_DM_CMD_PACKET_ALERT
// (net_dm_packet_report_fill and net_dm_hw_packet_report_fill in
// drop_monitor.c) into p, reusing p's slices, and its strings where they
// did not change (one location and reason after another under a flood).
// Unknown attributes are skipped (newer kernels); the ones the kernel
// always sends must be there. It walks the attributes in place
// (nlattr): one alert after another, no allocation.
func parsePacketAlert(b []byte, p *PacketAlert) error {
	prev := *p
	*p = PacketAlert{Payload: p.Payload[:0], FlowActionCookie: p.FlowActionCookie[:0]}
	var seen uint
	ad := nlattr.New(b)
	for ad.Next() {
		switch ad.Type() {
		case attrOrigin:
			p.Origin = Origin(ad.Uint16())
		case attrPC:
			p.PC = ad.Uint64()
			seen |= seenPC
		case attrSymbol:
			p.Symbol = ad.String(prev.Symbol)
			seen |= seenSymbol
		case attrReason:
			p.Reason = ad.String(prev.Reason)
		case attrInPort:
			nad := nlattr.New(ad.Value())
			for nad.Next() {
				switch nad.Type() {
				case portAttrIfindex:
					p.Ifindex = nad.Uint32()
				case portAttrName:
					p.Ifname = nad.String(prev.Ifname)
				}
			}
			if err := nad.Err(); err != nil {
				return err
			}
		case attrTimestamp:
			p.Timestamp = ad.Uint64()
			seen |= seenTimestamp
		case attrOrigLen:
			p.OrigLen = ad.Uint32()
			seen |= seenOrigLen
		case attrProto:
			p.Proto = ad.Uint16()
			seen |= seenProto
		case attrPayload:
			p.Payload = append(p.Payload[:0], ad.Value()...)
			seen |= seenPayload
		case attrHWTrapGroupName:
			p.HWTrapGroup = ad.String(prev.HWTrapGroup)
			seen |= seenTrapGroup
		case attrHWTrapName:
			p.HWTrapName = ad.String(prev.HWTrapName)
			seen |= seenTrapName
		case attrFlowActionCookie:
			p.FlowActionCookie = append(p.FlowActionCookie[:0], ad.Value()...)
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	return checkPacketAlert(p, seen)
}

// checkPacketAlert rejects alerts that lack what the kernel always sends,
// which is how a message cut at an attribute boundary shows.
func checkPacketAlert(p *PacketAlert, seen uint) error {
	need := func(bits uint, what string) error {
		if seen&bits != bits {
			return fmt.Errorf("%w: %s packet alert without %s", ErrMalformed, p.Origin, what)
		}
		return nil
	}
	if err := need(seenTimestamp|seenOrigLen, "timestamp and original length"); err != nil {
		return err
	}
	switch p.Origin {
	case OriginSoftware:
		if err := need(seenPC|seenSymbol, "PC and symbol"); err != nil {
			return err
		}
	case OriginHardware:
		if err := need(seenTrapGroup|seenTrapName, "trap group and name"); err != nil {
			return err
		}
	}
	if seen&seenPayload != 0 {
		if err := need(seenProto, "protocol"); err != nil {
			return err
		}
	}
	if uint64(len(p.Payload)) > uint64(p.OrigLen) {
		return fmt.Errorf("%w: payload of %d bytes longer than the packet (%d)", ErrMalformed, len(p.Payload), p.OrigLen)
	}
	return nil
}

// parseSummaryAlert decodes the attributes of a NET_DM_CMD_ALERT: one
// attribute of type 0 (NLA_UNSPEC) holding the legacy binary struct
// net_dm_alert_msg (reset_per_cpu_data and trace_drop_common in
// drop_monitor.c), and for hardware summaries a nested list of trap
// entries after an empty struct.
func parseSummaryAlert(ad *netlink.AttributeDecoder, s *SummaryAlert) error {
	s.Drops, s.HW = s.Drops[:0], s.HW[:0]
	var legacy bool
	for ad.Next() {
		switch ad.Type() {
		case attrUnspec:
			ad.Do(func(b []byte) error {
				var err error
				s.Drops, err = decodeAlertMsg(b, s.Drops)
				return err
			})
			legacy = true
		case attrHWEntries:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == attrHWEntry {
						nad.Nested(func(e *netlink.AttributeDecoder) error {
							var d HWDrop
							for e.Next() {
								switch e.Type() {
								case attrHWTrapName:
									d.TrapName = e.String()
								case attrHWTrapCount:
									d.Count = e.Uint32()
								}
							}
							s.HW = append(s.HW, d)
							return e.Err()
						})
					}
				}
				return nad.Err()
			})
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	if !legacy {
		return fmt.Errorf("%w: summary alert without its struct net_dm_alert_msg", ErrMalformed)
	}
	return nil
}

// decodeAlertMsg decodes struct net_dm_alert_msg: a u32 entry count, then
// that many struct net_dm_drop_point { __u8 pc[8]; __u32 count; } of 12
// bytes, all in host byte order (pc is the raw pointer). The count is
// checked against the bytes present before anything is allocated; bytes
// after the last entry (attribute padding) are ignored.
func decodeAlertMsg(b []byte, dst []DropPoint) ([]DropPoint, error) {
	if len(b) < alertMsgHeaderLen {
		return dst, fmt.Errorf("%w: summary struct of %d bytes, shorter than its entry count", ErrMalformed, len(b))
	}
	n := uint64(binary.NativeEndian.Uint32(b))
	body := b[alertMsgHeaderLen:]
	if room := uint64(len(body)) / dropPointLen; n > room {
		return dst, fmt.Errorf("%w: summary claims %d entries, room for %d", ErrMalformed, n, room)
	}
	dst = append(dst[:0], make([]DropPoint, n)...)
	for i := range dst {
		e := body[i*dropPointLen:]
		dst[i] = DropPoint{PC: binary.NativeEndian.Uint64(e[0:8]), Count: binary.NativeEndian.Uint32(e[8:12])}
	}
	return dst, nil
}
