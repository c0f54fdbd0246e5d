package tracer

import (
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// EtherType values pktfate decodes.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
)

// packetDecoder decodes captured headers with gopacket's DecodingLayerParser,
// reusing its layers so decoding does not allocate. Not safe for concurrent use.
type packetDecoder struct {
	ip4    layers.IPv4
	ip6    layers.IPv6
	udp    layers.UDP
	tcp    layers.TCP
	icmp4  layers.ICMPv4
	icmp6  layers.ICMPv6
	arp    layers.ARP
	eth    layers.Ethernet
	p4     *gopacket.DecodingLayerParser
	p6     *gopacket.DecodingLayerParser
	pEth   *gopacket.DecodingLayerParser
	pARP   *gopacket.DecodingLayerParser
	layers []gopacket.LayerType
}

func newPacketDecoder() *packetDecoder {
	d := &packetDecoder{layers: make([]gopacket.LayerType, 0, 8)}
	all := []gopacket.DecodingLayer{&d.ip4, &d.ip6, &d.udp, &d.tcp, &d.icmp4, &d.icmp6, &d.arp}
	d.p4 = newParser(layers.LayerTypeIPv4, all...)
	d.p6 = newParser(layers.LayerTypeIPv6, all...)
	d.pARP = newParser(layers.LayerTypeARP, all...)
	d.pEth = newParser(layers.LayerTypeEthernet, append(all, &d.eth)...)
	return d
}

// newParser returns a parser that stops quietly at unsupported layers.
// Layer types are small integers: a sparse array finds the next decoder
// without the default container's map lookup.
func newParser(first gopacket.LayerType, decoders ...gopacket.DecodingLayer) *gopacket.DecodingLayerParser {
	dlc := gopacket.DecodingLayerContainer(gopacket.DecodingLayerSparse(nil))
	for _, l := range decoders {
		dlc = dlc.Put(l)
	}
	p := gopacket.NewDecodingLayerParser(first)
	p.SetDecodingLayerContainer(dlc)
	p.IgnoreUnsupported = true
	return p
}

// decode fills p from data, which starts at the network header (or the MAC
// header when mac is set). etherType is skb->protocol in host order; when it
// is not an IP type the IP version nibble decides. Anything undecodable
// leaves the fields it could not fill at their zero value.
func (d *packetDecoder) decode(p *Packet, etherType uint16, data []byte, mac bool) {
	*p = Packet{}
	if len(data) == 0 {
		return
	}
	var parser *gopacket.DecodingLayerParser
	switch {
	case mac:
		parser = d.pEth
	case etherType == etherTypeIPv4:
		parser = d.p4
	case etherType == etherTypeIPv6:
		parser = d.p6
	case etherType == etherTypeARP:
		parser = d.pARP
	case data[0]>>4 == 4:
		parser = d.p4
	case data[0]>>4 == 6:
		parser = d.p6
	default:
		return
	}
	// Errors only mean "stopped early"; keep whatever layers decoded.
	_ = parser.DecodeLayers(data, &d.layers)
	for _, lt := range d.layers {
		switch lt {
		case layers.LayerTypeIPv4:
			p.Proto = "ipv4"
			p.Src, _ = netip.AddrFromSlice(d.ip4.SrcIP)
			p.Dst, _ = netip.AddrFromSlice(d.ip4.DstIP)
			hl := int(d.ip4.IHL) * 4
			if int(d.ip4.Length) > hl {
				p.PayloadLen = int(d.ip4.Length) - hl
			}
		case layers.LayerTypeIPv6:
			p.Proto = "ipv6"
			p.Src, _ = netip.AddrFromSlice(d.ip6.SrcIP)
			p.Dst, _ = netip.AddrFromSlice(d.ip6.DstIP)
			p.PayloadLen = int(d.ip6.Length)
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
	}
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
