package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
)

// sockOpts sets the TTL (or hop limit) and receive buffer of a socket
// before it is bound.
func sockOpts(v6 bool, ttl, rcvbuf int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if ttl > 0 {
				if v6 {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
				}
				if serr != nil {
					return
				}
			}
			if rcvbuf > 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
		return errors.Join(err, serr)
	}
}

// send sends one traffic item, from a thread inside the sender's
// namespace. Errors the network returns to the sender (refused,
// unreachable, EPERM from a local rule) are expected outcomes: they are
// returned as notes, not errors.
func send(ctx context.Context, ns *netns.NS, t Traffic) (notes []string, err error) {
	derr := ns.Do(func() error {
		notes, err = sendHere(ctx, ns, t)
		return nil
	})
	return notes, errors.Join(err, derr)
}

func sendHere(ctx context.Context, ns *netns.NS, t Traffic) (notes []string, err error) {
	payload := make([]byte, t.Size)
	copy(payload, "pktfate check")
	note := func(e error) {
		if len(notes) < 3 {
			notes = append(notes, fmt.Sprintf("%s to %s from %s: %v", t.Proto, t.To, t.From, e))
		}
	}
	switch {
	case t.Fragments != nil:
		err = sendFragments(ctx, ns, t, payload, note)
	case t.Proto == "udp" && t.BadChecksum:
		err = sendBadUDP(ctx, ns, t, payload, note)
	case t.Proto == "udp":
		err = sendUDP(ctx, ns, t, payload, note)
	case t.Proto == "tcp" && t.TCPFlags != 0:
		err = sendTCPSegments(ctx, ns, t, payload, note)
	case t.Proto == "tcp":
		sendTCP(ctx, ns, t, payload, note)
	case t.Proto == "icmp":
		err = sendEcho(ctx, ns, t, payload, note)
	}
	return notes, err
}

func sendUDP(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) error {
	v6 := t.To.Addr().Is6()
	lc := net.ListenConfig{Control: sockOpts(v6, t.TTL, 0)}
	var pc net.PacketConn
	local := net.JoinHostPort(addrOrAny(t.Src, v6), "0")
	if err := ns.Do(func() error {
		var err error
		pc, err = lc.ListenPacket(ctx, map[bool]string{false: "udp4", true: "udp6"}[v6], local)
		return err
	}); err != nil {
		return fmt.Errorf("opening a UDP socket in %s: %w", t.From, err)
	}
	defer pc.Close()
	dst := net.UDPAddrFromAddrPort(t.To)
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		if _, err := pc.WriteTo(payload, dst); err != nil {
			note(err)
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	return nil
}

// sendTCP opens one connection per count and sends the payload as the
// data mode says.
func sendTCP(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) {
	d := net.Dialer{Timeout: time.Second, Control: sockOpts(t.To.Addr().Is6(), t.TTL, 0)}
	if t.Src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(t.Src, 0))
	}
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		var conn net.Conn
		err := ns.Do(func() error {
			var err error
			conn, err = d.DialContext(ctx, "tcp", t.To.String())
			return err
		})
		if err != nil {
			note(err)
			continue
		}
		if err := tcpData(ctx, ns, t, conn.(*net.TCPConn), payload); err != nil {
			note(err)
		}
		conn.Close()
	}
}

// tcpData sends the payload on an open connection as the data mode says.
func tcpData(ctx context.Context, ns *netns.NS, t Traffic, conn *net.TCPConn, payload []byte) error {
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if t.Data == DataAfterPeerClose {
		// The peer's FIN makes a read return io.EOF.
		if _, err := io.Copy(io.Discard, conn); err != nil {
			return fmt.Errorf("waiting for the peer to close: %w", err)
		}
	}
	if _, err := conn.Write(payload); err != nil {
		return err
	}
	switch t.Data {
	case DataOutOfWindow:
		return sendOutOfWindow(ns, conn, payload)
	case DataRequest:
		// Until the peer closes (EOF) or resets (an error) the connection.
		if _, err := io.Copy(io.Discard, conn); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
	}
	return nil
}

func sendEcho(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) error {
	v6 := t.To.Addr().Is6()
	network, laddr := "ip4:icmp", addrOrAny(t.Src, false)
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if v6 {
		network, laddr, typ = "ip6:ipv6-icmp", addrOrAny(t.Src, true), ipv6.ICMPTypeEchoRequest
	}
	var pc *icmp.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = icmp.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return fmt.Errorf("opening an ICMP socket in %s: %w", t.From, err)
	}
	defer pc.Close()
	if t.TTL > 0 {
		var err error
		if v6 {
			err = pc.IPv6PacketConn().SetHopLimit(t.TTL)
		} else {
			err = pc.IPv4PacketConn().SetTTL(t.TTL)
		}
		if err != nil {
			return fmt.Errorf("setting the TTL: %w", err)
		}
	}
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: i + 1, Data: payload}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: t.To.Addr().AsSlice()}); err != nil {
			note(err)
		}
	}
	return nil
}

func addrOrAny(a netip.Addr, v6 bool) string {
	switch {
	case a.IsValid():
		return a.String()
	case v6:
		return "::"
	}
	return "0.0.0.0"
}

// sendBadUDP sends UDP datagrams through a raw socket, with the checksum
// of the right one inverted.
func sendBadUDP(ctx context.Context, ns *netns.NS, t Traffic, payload []byte, note func(error)) error {
	var src netip.Addr
	if err := ns.Do(func() (err error) { src, err = sourceAddr(t); return err }); err != nil {
		return err
	}
	b := udpDatagram(src, t.To, rawSport, payload)
	b[6] ^= 0x5a
	b[7] ^= 0x5a
	if b[6] == 0 && b[7] == 0 {
		b[7] = 1 // zero would mean "no checksum" over IPv4
	}
	var segs [][]byte
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		segs = append(segs, b)
	}
	return sendRawL4(ns, src, t.To.Addr(), unix.IPPROTO_UDP, t.TTL, segs, note)
}
