package fate

import (
	"encoding/binary"
	"net/netip"
)

// EtherType values pktfate decodes.
const (
	etherTypeIPv4  = 0x0800
	etherTypeARP   = 0x0806
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	ipProtoICMP    = 1
	ipProtoTCP     = 6
	ipProtoUDP     = 17
	ipProtoICMPv6  = 58
	ipProtoHopOpts = 0
	ipProtoRouting = 43
	ipProtoFrag    = 44
	ipProtoDstOpts = 60
)

// DecodePacket fills p with the summary of the captured headers: data
// starts at the network header of protocol etherType (skb->protocol, host
// order), or at the MAC header (Ethernet, with up to two VLAN tags) when
// mac is set. The protocol alone decides how the bytes are read: a packet
// whose protocol pktfate does not decode is left empty, never guessed from
// its first byte. It decodes only what the summary shows, allocates
// nothing and keeps no state, so any number of goroutines may call it.
// Headers cut short leave the fields they would fill at their zero value.
func DecodePacket(p *Packet, etherType uint16, data []byte, mac bool) {
	*p = Packet{}
	if mac {
		if len(data) < 14 {
			return
		}
		etherType, data = binary.BigEndian.Uint16(data[12:]), data[14:]
		for i := 0; i < 2 && (etherType == etherTypeVLAN || etherType == etherTypeQinQ); i++ {
			if len(data) < 4 {
				return
			}
			etherType, data = binary.BigEndian.Uint16(data[2:]), data[4:]
		}
	}
	switch etherType {
	case etherTypeIPv4:
		decodeIPv4(p, data)
	case etherTypeIPv6:
		decodeIPv6(p, data)
	case etherTypeARP:
		decodeARP(p, data)
	}
}

func decodeIPv4(p *Packet, b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total == 0 { // segmentation offload: the length is the buffer's
		total = len(b)
	}
	if hl < 20 || total < hl || hl > len(b) {
		return
	}
	p.Proto = "ipv4"
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if total > hl {
		p.PayloadLen = total - hl
	}
	// A fragment other than the first carries no transport header; the
	// first (more-fragments set, offset 0) does.
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
		return
	}
	decodeTransport(p, b[9], b[hl:min(total, len(b))])
}

func decodeIPv6(p *Packet, b []byte) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return
	}
	p.Proto = "ipv6"
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	p.PayloadLen = int(binary.BigEndian.Uint16(b[4:]))
	next, rest := b[6], b[40:]
	// Extension headers before the transport, as far as they were captured.
	for range 8 {
		switch next {
		case ipProtoHopOpts, ipProtoRouting, ipProtoDstOpts:
			if len(rest) < 8 {
				return
			}
			n := (int(rest[1]) + 1) * 8
			if n > len(rest) {
				return
			}
			next, rest = rest[0], rest[n:]
			p.PayloadLen = max(p.PayloadLen-n, 0)
		case ipProtoFrag:
			if len(rest) < 8 || binary.BigEndian.Uint16(rest[2:])&0xfff8 != 0 {
				return // cut short, or not the first fragment
			}
			next, rest = rest[0], rest[8:]
			p.PayloadLen = max(p.PayloadLen-8, 0)
		default:
			decodeTransport(p, next, rest)
			return
		}
	}
}

// decodeTransport reads the transport header b of IP protocol proto; p's
// PayloadLen holds the IP payload length on entry.
func decodeTransport(p *Packet, proto uint8, b []byte) {
	switch proto {
	case ipProtoUDP:
		if len(b) < 8 {
			return
		}
		p.Proto = "udp"
		p.Sport, p.Dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		p.PayloadLen = 0
		if l := int(binary.BigEndian.Uint16(b[4:])); l >= 8 {
			p.PayloadLen = l - 8
		}
	case ipProtoTCP:
		if len(b) < 20 {
			return
		}
		hl := int(b[12]>>4) * 4
		if hl < 20 || hl > len(b) {
			return
		}
		p.Proto = "tcp"
		p.Sport, p.Dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		p.TCPFlags = b[13]
		if p.PayloadLen >= hl {
			p.PayloadLen -= hl
		}
	case ipProtoICMP:
		if len(b) < 8 {
			return
		}
		p.Proto = "icmp"
		p.ICMPType, p.ICMPCode = b[0], b[1]
		p.PayloadLen = 0
	case ipProtoICMPv6:
		if len(b) < 4 {
			return
		}
		p.Proto = "icmp6"
		p.ICMPType, p.ICMPCode = b[0], b[1]
		p.PayloadLen = 0
	}
}

func decodeARP(p *Packet, b []byte) {
	if len(b) < 8 {
		return
	}
	hlen, plen := int(b[4]), int(b[5])
	if len(b) < 8+2*hlen+2*plen {
		return
	}
	p.Proto = "arp"
	if binary.BigEndian.Uint16(b[2:]) == etherTypeIPv4 && plen == 4 {
		p.Src = netip.AddrFrom4([4]byte(b[8+hlen : 8+hlen+4]))
		p.Dst = netip.AddrFrom4([4]byte(b[8+2*hlen+4 : 8+2*hlen+8]))
	}
}
