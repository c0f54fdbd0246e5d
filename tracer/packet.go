package tracer

import (
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/pktfate/pktfate/fate"
)

// EtherType values pktfate decodes.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
)

// packetDecoder decodes captured headers with gopacket's layers, reusing
// them so decoding does not allocate. It walks the layers itself rather
// than through a DecodingLayerParser: the headers pktfate captures are a
// short fixed chain (Ethernet, IP, one transport), and the parser's
// generic lookup and deferred recover were a quarter of the decoding time.
// Not safe for concurrent use.
type packetDecoder struct {
	ip4   layers.IPv4
	ip6   layers.IPv6
	udp   layers.UDP
	tcp   layers.TCP
	icmp4 layers.ICMPv4
	icmp6 layers.ICMPv6
	arp   layers.ARP
	eth   layers.Ethernet
}

func newPacketDecoder() *packetDecoder { return &packetDecoder{} }

// decode fills p from data, which starts at the network header (or the MAC
// header when mac is set). etherType is skb->protocol in host order; when it
// is not an IP type the IP version nibble decides. Anything undecodable
// leaves the fields it could not fill at their zero value.
func (d *packetDecoder) decode(p *fate.Packet, etherType uint16, data []byte, mac bool) {
	*p = fate.Packet{}
	if len(data) == 0 {
		return
	}
	var next gopacket.LayerType
	switch {
	case mac:
		next = layers.LayerTypeEthernet
	case etherType == etherTypeIPv4:
		next = layers.LayerTypeIPv4
	case etherType == etherTypeIPv6:
		next = layers.LayerTypeIPv6
	case etherType == etherTypeARP:
		next = layers.LayerTypeARP
	case data[0]>>4 == 4:
		next = layers.LayerTypeIPv4
	case data[0]>>4 == 6:
		next = layers.LayerTypeIPv6
	default:
		return
	}
	// A layer that panics on hostile bytes ends the walk like an error
	// (DecodingLayerParser guards the same way).
	defer func() { _ = recover() }()
	// Ethernet, IP, transport: a layer that does not decode (or one
	// pktfate does not know) ends the walk, keeping what came before.
	for range 3 {
		var l gopacket.DecodingLayer
		switch next {
		case layers.LayerTypeEthernet:
			l = &d.eth
		case layers.LayerTypeIPv4:
			l = &d.ip4
		case layers.LayerTypeIPv6:
			l = &d.ip6
		case layers.LayerTypeUDP:
			l = &d.udp
		case layers.LayerTypeTCP:
			l = &d.tcp
		case layers.LayerTypeICMPv4:
			l = &d.icmp4
		case layers.LayerTypeICMPv6:
			l = &d.icmp6
		case layers.LayerTypeARP:
			l = &d.arp
		default:
			return
		}
		if l.DecodeFromBytes(data, gopacket.NilDecodeFeedback) != nil {
			return
		}
		if !d.fill(p, next) {
			return // a transport layer: nothing below it is summarised
		}
		next, data = l.NextLayerType(), l.LayerPayload()
	}
}

// fill copies what the summary needs from the layer of type lt that just
// decoded; it reports whether a layer below it is worth decoding.
func (d *packetDecoder) fill(p *fate.Packet, lt gopacket.LayerType) bool {
	switch lt {
	case layers.LayerTypeEthernet:
		return true
	case layers.LayerTypeIPv4:
		p.Proto = "ipv4"
		p.Src, _ = netip.AddrFromSlice(d.ip4.SrcIP)
		p.Dst, _ = netip.AddrFromSlice(d.ip4.DstIP)
		hl := int(d.ip4.IHL) * 4
		if int(d.ip4.Length) > hl {
			p.PayloadLen = int(d.ip4.Length) - hl
		}
		return true
	case layers.LayerTypeIPv6:
		p.Proto = "ipv6"
		p.Src, _ = netip.AddrFromSlice(d.ip6.SrcIP)
		p.Dst, _ = netip.AddrFromSlice(d.ip6.DstIP)
		p.PayloadLen = int(d.ip6.Length)
		return true
	case layers.LayerTypeUDP:
		p.Proto = "udp"
		p.Sport, p.Dport = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		p.PayloadLen = 0
		if d.udp.Length >= 8 {
			p.PayloadLen = int(d.udp.Length) - 8
		}
	case layers.LayerTypeTCP:
		p.Proto = "tcp"
		p.Sport, p.Dport = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
		p.TCPFlags = tcpFlags(&d.tcp)
		if hl := int(d.tcp.DataOffset) * 4; p.PayloadLen >= hl {
			p.PayloadLen -= hl
		}
	case layers.LayerTypeICMPv4:
		p.Proto = "icmp"
		p.ICMPType, p.ICMPCode = d.icmp4.TypeCode.Type(), d.icmp4.TypeCode.Code()
		p.PayloadLen = 0
	case layers.LayerTypeICMPv6:
		p.Proto = "icmp6"
		p.ICMPType, p.ICMPCode = d.icmp6.TypeCode.Type(), d.icmp6.TypeCode.Code()
		p.PayloadLen = 0
	case layers.LayerTypeARP:
		p.Proto = "arp"
		if d.arp.Protocol == layers.EthernetTypeIPv4 {
			p.Src, _ = netip.AddrFromSlice(d.arp.SourceProtAddress)
			p.Dst, _ = netip.AddrFromSlice(d.arp.DstProtAddress)
		}
	}
	return false
}

func tcpFlags(t *layers.TCP) uint8 {
	bit := func(set bool, b uint8) uint8 {
		if set {
			return b
		}
		return 0
	}
	return bit(t.FIN, 0x01) | bit(t.SYN, 0x02) | bit(t.RST, 0x04) | bit(t.PSH, 0x08) |
		bit(t.ACK, 0x10) | bit(t.URG, 0x20) | bit(t.ECE, 0x40) | bit(t.CWR, 0x80)
}
