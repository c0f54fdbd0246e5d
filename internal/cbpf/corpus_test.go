package cbpf

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// expressions returns the project's filter corpus followed by this
// package's additions (the cases the translation must get right: ports,
// ranges, header fields, flags, arithmetic, VLAN, ARP, IPv6).
func expressions(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, path := range []string{"../../testdata/filters/corpus.txt", "testdata/filters.txt"} {
		f, err := os.Open(path)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// testPacket is a packet both ways pktfate's programs see one: from the
// network header with the skb's EtherType (L3), and as an Ethernet frame (L2).
type testPacket struct {
	name      string
	etherType uint16
	l3        []byte
	l2        []byte
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	for _, l := range ls {
		if c, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if ip, ok := nl.(gopacket.NetworkLayer); ok {
					if err := c.SetNetworkLayerForChecksum(ip); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

func ip4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
}

func ip6(src, dst string, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
}

// testPackets builds packets the corpus expressions match and miss.
func testPackets(tb testing.TB) []testPacket {
	tb.Helper()
	var out []testPacket
	add := func(name string, et layers.EthernetType, ls ...gopacket.SerializableLayer) {
		l3 := serialize(tb, ls...)
		eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: et}
		l2 := serialize(tb, append([]gopacket.SerializableLayer{eth}, ls...)...)
		out = append(out, testPacket{name: name, etherType: uint16(et), l3: l3, l2: l2})
	}
	v4, v6 := layers.EthernetTypeIPv4, layers.EthernetTypeIPv6
	pay := gopacket.Payload("pktfate payload bytes")

	add("udp4 dns", v4, ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("udp4 discard", v4, ip4("192.0.2.7", "198.51.100.1", layers.IPProtocolUDP), &layers.UDP{SrcPort: 1234, DstPort: 9}, pay)
	add("udp4 1024", v4, ip4("10.1.2.3", "10.0.0.1", layers.IPProtocolUDP), &layers.UDP{SrcPort: 1024, DstPort: 2000}, pay)
	add("udp4 high", v4, ip4("172.16.0.1", "10.255.255.255", layers.IPProtocolUDP), &layers.UDP{SrcPort: 65535, DstPort: 40005}, pay)
	add("udp4 empty", v4, ip4("10.0.0.2", "10.0.0.1", layers.IPProtocolUDP), &layers.UDP{SrcPort: 53, DstPort: 40000})
	add("tcp4 syn", v4, ip4("192.0.2.7", "198.51.100.1", layers.IPProtocolTCP), &layers.TCP{SrcPort: 1234, DstPort: 443, SYN: true, Window: 1000})
	add("tcp4 synack", v4, ip4("198.51.100.1", "192.0.2.7", layers.IPProtocolTCP), &layers.TCP{SrcPort: 443, DstPort: 1234, SYN: true, ACK: true, Window: 1000})
	add("tcp4 ack data", v4, ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolTCP), &layers.TCP{SrcPort: 40001, DstPort: 80, ACK: true, PSH: true, Window: 1000}, pay)
	add("tcp4 fin", v4, ip4("10.0.0.2", "10.0.0.1", layers.IPProtocolTCP), &layers.TCP{SrcPort: 80, DstPort: 40001, FIN: true, ACK: true, Window: 1000})
	add("tcp4 rst", v4, ip4("10.0.0.2", "10.0.0.1", layers.IPProtocolTCP), &layers.TCP{SrcPort: 22, DstPort: 1023, RST: true})
	add("icmp4 echo", v4, ip4("10.0.0.1", "10.1.2.3", layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, pay)
	add("icmp4 reply", v4, ip4("10.1.2.3", "10.0.0.1", layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: 1, Seq: 1}, pay)
	add("icmp4 unreach", v4, ip4("10.0.0.2", "10.0.0.1", layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, pay)
	lowTTL := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP)
	lowTTL.TTL = 3
	add("udp4 ttl 3", v4, lowTTL, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	for _, ttl := range []uint8{63, 65, 128} {
		ip := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP)
		ip.TTL = ttl
		add(fmt.Sprintf("udp4 ttl %d", ttl), v4, ip, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	}
	opts := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP)
	opts.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	add("udp4 options", v4, opts, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	frag := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP)
	frag.FragOffset = 185
	add("udp4 later fragment", v4, frag, gopacket.Payload("\x9c\x40\x00\x35 not a udp header at all"))
	first := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP)
	first.Flags = layers.IPv4MoreFragments
	add("udp4 first fragment", v4, first, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("udp4 multicast", v4, ip4("10.0.0.1", "224.0.0.251", layers.IPProtocolUDP), &layers.UDP{SrcPort: 5353, DstPort: 5353}, pay)
	add("udp4 big", v4, ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 9}, gopacket.Payload(make([]byte, 1200)))
	add("gre4", v4, ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolGRE), pay)

	add("udp6 dns", v6, ip6("fd00::1", "fd00::2", layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("udp6 lo", v6, ip6("::1", "::1", layers.IPProtocolUDP), &layers.UDP{SrcPort: 1234, DstPort: 9}, pay)
	add("tcp6 syn", v6, ip6("fd00::1", "2001:db8::5", layers.IPProtocolTCP), &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 100})
	add("tcp6 ack", v6, ip6("2001:db8::5", "fd00::1", layers.IPProtocolTCP), &layers.TCP{SrcPort: 443, DstPort: 40000, ACK: true, Window: 100}, pay)
	add("icmp6 echo", v6, ip6("fd00::1", "fd00::2", layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, gopacket.Payload("ping"))
	add("icmp6 ns", v6, ip6("fe80::1", "ff02::1:ff00:2", layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(135, 0)}, gopacket.Payload(make([]byte, 20)))
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolUDP
	hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
	add("udp6 hop-by-hop", v6, ip6("fd00::1", "fd00::2", layers.IPProtocolIPv6HopByHop), hbh, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("udp6 fragment", v6, ip6("fd00::1", "fd00::2", layers.IPProtocolIPv6Fragment),
		&layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, Identification: 7, MoreFragments: true}, &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("tcp6 fragment", v6, ip6("fd00::1", "fd00::2", layers.IPProtocolIPv6Fragment),
		&layers.IPv6Fragment{NextHeader: layers.IPProtocolTCP, Identification: 8}, &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true})
	add("udp6 multicast", v6, ip6("fe80::1", "ff02::fb", layers.IPProtocolUDP), &layers.UDP{SrcPort: 5353, DstPort: 5353}, pay)

	add("arp request", layers.EthernetTypeARP, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: macA, SourceProtAddress: net.ParseIP("10.0.0.1").To4(),
		DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP("10.0.0.2").To4()})
	out[len(out)-1].l2 = append(append([]byte(nil), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), out[len(out)-1].l2[6:]...)
	add("arp reply", layers.EthernetTypeARP, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPReply,
		SourceHwAddress: macB, SourceProtAddress: net.ParseIP("10.0.0.2").To4(),
		DstHwAddress: macA, DstProtAddress: net.ParseIP("10.0.0.1").To4()})
	add("rarp request", layers.EthernetType(0x8035), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: 3,
		SourceHwAddress: macA, SourceProtAddress: make([]byte, 4),
		DstHwAddress: macA, DstProtAddress: make([]byte, 4)})
	add("vlan udp4", layers.EthernetTypeDot1Q, &layers.Dot1Q{VLANIdentifier: 100, Type: v4},
		ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 53}, pay)
	add("vlan tcp6", layers.EthernetTypeDot1Q, &layers.Dot1Q{VLANIdentifier: 7, Type: v6},
		ip6("fd00::1", "fd00::2", layers.IPProtocolTCP), &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true})
	add("lldp-ish", layers.EthernetType(0x88cc), gopacket.Payload("\x02\x07\x04\x02\x00\x00\x00\x00\x01"))
	add("empty", layers.EthernetType(0x0800))
	junk := make([]byte, 90)
	for i := range junk {
		junk[i] = byte(i*37 + 11)
	}
	junk[0] = 0x45
	add("ip4 junk", v4, gopacket.Payload(junk))
	junk6 := append([]byte{0x60}, junk[1:]...)
	add("ip6 junk", v6, gopacket.Payload(junk6))
	return out
}
