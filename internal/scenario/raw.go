package scenario

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
)

// rawSport is the source port of the UDP datagrams and TCP segments built
// here (no socket owns it).
const rawSport = 40000

// sourceAddr returns the address the kernel would send from to t.To
// (t.Src when set), for the checksums' pseudo-headers. It runs inside the
// sender's namespace.
func sourceAddr(t Traffic) (netip.Addr, error) {
	probe, err := net.DialUDP("udp", udpAddr(t.Src), net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.To.Addr(), 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("finding the source address towards %s: %w", t.To.Addr(), err)
	}
	defer probe.Close()
	return probe.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

func udpAddr(a netip.Addr) *net.UDPAddr {
	if !a.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
}

// checksum is the Internet checksum of the concatenated parts.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	odd := false
	for _, p := range parts {
		for _, c := range p {
			if odd {
				sum += uint32(c)
			} else {
				sum += uint32(c) << 8
			}
			odd = !odd
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoHeader is the IPv4 or IPv6 pseudo-header of a transport checksum.
func pseudoHeader(src, dst netip.Addr, proto uint8, length int) []byte {
	if src.Is4() {
		return append(append(src.AsSlice(), dst.AsSlice()...), 0, proto, byte(length>>8), byte(length))
	}
	b := append(src.AsSlice(), dst.AsSlice()...)
	return append(b, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
}

// udpDatagram builds a UDP header and payload with a right checksum.
func udpDatagram(src netip.Addr, dst netip.AddrPort, sport uint16, payload []byte) []byte {
	n := 8 + len(payload)
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint16(b[4:], uint16(n))
	copy(b[8:], payload)
	sum := checksum(pseudoHeader(src, dst.Addr(), unix.IPPROTO_UDP, n), b)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], sum)
	return b
}

// echoRequest builds an ICMP (or, to an IPv6 address, ICMPv6) echo
// request with a right checksum.
func echoRequest(src, dst netip.Addr, seq int, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = 8
	if dst.Is6() {
		b[0] = 128
	}
	binary.BigEndian.PutUint16(b[4:], uint16(os.Getpid()))
	binary.BigEndian.PutUint16(b[6:], uint16(seq))
	copy(b[8:], payload)
	var sum uint16
	if dst.Is6() {
		sum = checksum(pseudoHeader(src, dst, unix.IPPROTO_ICMPV6, len(b)), b)
	} else {
		sum = checksum(b)
	}
	binary.BigEndian.PutUint16(b[2:], sum)
	return b
}

// tcpSegment builds a TCP header (20 bytes, no options) and payload with
// a right checksum.
func tcpSegment(src netip.AddrPort, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], payload)
	binary.BigEndian.PutUint16(b[16:], checksum(pseudoHeader(src.Addr(), dst.Addr(), unix.IPPROTO_TCP, len(b)), b))
	return b
}

// rawIP is a socket that sends whole IP packets (IP_HDRINCL, or
// IPV6_HDRINCL), opened inside a namespace.
type rawIP struct {
	fd int
	v6 bool
}

func openRawIP(ns *netns.NS, v6 bool) (*rawIP, error) {
	r := &rawIP{fd: -1, v6: v6}
	err := ns.Do(func() error {
		var err error
		if v6 {
			if r.fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
				return err
			}
			return unix.SetsockoptInt(r.fd, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1)
		}
		// IPPROTO_RAW implies IP_HDRINCL.
		r.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("opening a raw IP socket: %w", err)
	}
	return r, nil
}

func (r *rawIP) Close() {
	if r.fd >= 0 {
		unix.Close(r.fd)
	}
}

func (r *rawIP) send(dst netip.Addr, pkt []byte) error {
	if r.v6 {
		return unix.Sendto(r.fd, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
	}
	return unix.Sendto(r.fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
}

// ipv4Fragment builds an IPv4 packet carrying one fragment; the kernel
// fills in the header checksum.
func ipv4Fragment(src, dst netip.Addr, proto uint8, ttl int, id uint16, offset int, more bool, data []byte) []byte {
	b := make([]byte, ipv4.HeaderLen+len(data))
	b[0] = 4<<4 | ipv4.HeaderLen/4
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	fo := uint16(offset / 8)
	if more {
		fo |= 1 << 13
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = byte(ttl)
	b[9] = proto
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	copy(b[20:], data)
	return b
}

// ipv6Packet builds an IPv6 packet without extension headers.
func ipv6Packet(src, dst netip.Addr, proto uint8, hops int, data []byte) []byte {
	b := make([]byte, ipv6.HeaderLen+len(data))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(data)))
	b[6] = proto
	b[7] = byte(hops)
	copy(b[8:24], src.AsSlice())
	copy(b[24:40], dst.AsSlice())
	copy(b[40:], data)
	return b
}

// ipPacket builds a whole, unfragmented IP packet.
func ipPacket(src, dst netip.Addr, proto uint8, ttl int, data []byte) []byte {
	if ttl == 0 {
		ttl = 64
	}
	if dst.Is6() {
		return ipv6Packet(src, dst, proto, ttl, data)
	}
	return ipv4Fragment(src, dst, proto, ttl, uint16(rand.Uint32())|1, 0, false, data)
}

// sendRawL4 sends transport segments in whole IP packets through an
// IPPROTO_RAW socket (one that receives nothing: a raw socket of the
// transport's protocol would get, and in the end purge, a copy of every
// packet of that protocol arriving in the namespace).
func sendRawL4(ns *netns.NS, src, dst netip.Addr, proto uint8, ttl int, segs [][]byte, note func(error)) error {
	raw, err := openRawIP(ns, dst.Is6())
	if err != nil {
		return err
	}
	defer raw.Close()
	for _, seg := range segs {
		if err := raw.send(dst, ipPacket(src, dst, proto, ttl, seg)); err != nil {
			note(err)
		}
	}
	return nil
}

// ipv6Fragment builds an IPv6 packet with a fragment header carrying one
// fragment.
func ipv6Fragment(src, dst netip.Addr, proto uint8, hops int, id uint32, offset int, more bool, data []byte) []byte {
	const fragHdr = 8
	b := make([]byte, ipv6.HeaderLen+fragHdr+len(data))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(fragHdr+len(data)))
	b[6] = unix.IPPROTO_FRAGMENT
	b[7] = byte(hops)
	copy(b[8:24], src.AsSlice())
	copy(b[24:40], dst.AsSlice())
	f := b[ipv6.HeaderLen:]
	f[0] = proto
	fo := uint16(offset/8) << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(f[2:], fo)
	binary.BigEndian.PutUint32(f[4:], id)
	copy(f[fragHdr:], data)
	return b
}

// sendFragments sends each datagram (UDP, or an ICMP echo request) cut
// into the traffic's fragments, in their order. A fragment reaching past
// the datagram carries zeros there; one that ends at or past its end has
// the more-fragments flag clear.
func sendFragments(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) error {
	v6 := t.To.Addr().Is6()
	var src netip.Addr
	if err := ns.Do(func() (err error) { src, err = sourceAddr(t); return err }); err != nil {
		return err
	}
	raw, err := openRawIP(ns, v6)
	if err != nil {
		return err
	}
	defer raw.Close()
	ttl := t.TTL
	if ttl == 0 {
		ttl = 64
	}
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		var dgram []byte
		var proto uint8
		switch {
		case t.Proto == "udp":
			dgram, proto = udpDatagram(src, t.To, rawSport, payload), unix.IPPROTO_UDP
		case v6:
			dgram, proto = echoRequest(src, t.To.Addr(), i+1, payload), unix.IPPROTO_ICMPV6
		default:
			dgram, proto = echoRequest(src, t.To.Addr(), i+1, payload), unix.IPPROTO_ICMP
		}
		id := rand.Uint32()
		for _, f := range t.Fragments {
			piece := make([]byte, f.Length)
			if f.Offset < len(dgram) {
				copy(piece, dgram[f.Offset:])
			}
			more := f.Offset+f.Length < len(dgram)
			var pkt []byte
			if v6 {
				pkt = ipv6Fragment(src, t.To.Addr(), proto, ttl, id, f.Offset, more, piece)
			} else {
				pkt = ipv4Fragment(src, t.To.Addr(), proto, ttl, uint16(id)|1, f.Offset, more, piece)
			}
			if err := raw.send(t.To.Addr(), pkt); err != nil {
				note(err)
			}
		}
	}
	return nil
}

// sendTCPSegments sends raw TCP segments with the traffic's flags, from
// rawSport and a random sequence number: no connection exists for them.
func sendTCPSegments(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) error {
	var src netip.Addr
	if err := ns.Do(func() (err error) { src, err = sourceAddr(t); return err }); err != nil {
		return err
	}
	data := payload
	if t.TCPFlags&0x02 != 0 {
		data = nil // a SYN carries no data here
	}
	var segs [][]byte
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		segs = append(segs, tcpSegment(netip.AddrPortFrom(src, rawSport), t.To, rand.Uint32(), 0, t.TCPFlags, data))
	}
	return sendRawL4(ns, src, t.To.Addr(), unix.IPPROTO_TCP, t.TTL, segs, note)
}

// TCP_REPAIR_QUEUE values (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// sendOutOfWindow sends, on an open connection, one segment whose
// sequence number is 2^30 past the next one the peer expects: far outside
// any receive window. The connection's sequence numbers are read in
// repair mode (TCP_REPAIR, which needs CAP_NET_ADMIN).
func sendOutOfWindow(ns *netns.NS, conn *net.TCPConn, payload []byte) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var snd, rcv int
	var serr error
	err = rc.Control(func(fd uintptr) {
		f := int(fd)
		steps := []func() error{
			func() error { return unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1) },
			func() error { return unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue) },
			func() (err error) { snd, err = unix.GetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); return err },
			func() error { return unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue) },
			func() (err error) { rcv, err = unix.GetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); return err },
		}
		for _, step := range steps {
			if serr = step(); serr != nil {
				break
			}
		}
		// TCP_REPAIR_OFF_NO_WP: leave repair mode without the window
		// probe TCP_REPAIR_OFF sends (an old-sequence segment the peer
		// would drop too).
		if err := unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR, -1); serr == nil {
			serr = err
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("reading the connection's sequence numbers (TCP_REPAIR): %w", err)
	}
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	seg := tcpSegment(local, remote, uint32(snd)+1<<30, uint32(rcv), 0x18, payload) // PSH ACK
	var serr2 error
	if err := sendRawL4(ns, local.Addr(), remote.Addr(), unix.IPPROTO_TCP, 0, [][]byte{seg}, func(e error) { serr2 = e }); err != nil {
		return err
	}
	return serr2
}
