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

// listen opens a listener inside its namespace; the returned closer stops it.
func listen(ns *netns.NS, l Listener) (io.Closer, error) {
	lc := net.ListenConfig{Control: sockOpts(l.Addr.Addr().Is6(), 0, l.RcvBuf)}
	var c io.Closer
	err := ns.Do(func() error {
		if l.Proto == "udp" {
			pc, err := lc.ListenPacket(context.Background(), "udp", l.Addr.String())
			if err != nil {
				return err
			}
			c = pc
			if l.Read {
				go func() {
					buf := make([]byte, 65536)
					for {
						if _, _, err := pc.ReadFrom(buf); err != nil {
							return
						}
					}
				}()
			}
			return nil
		}
		ln, err := lc.Listen(context.Background(), "tcp", l.Addr.String())
		if err != nil {
			return err
		}
		c = ln
		if l.Read {
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(io.Discard, conn); conn.Close() }()
				}
			}()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s %s in %s: %w", l.Proto, l.Addr, l.Netns, err)
	}
	return c, nil
}

// send sends one traffic item. Errors the network returns to the sender
// (refused, unreachable, EPERM from a local rule) are expected outcomes:
// they are returned as notes, not errors.
func send(ctx context.Context, ns *netns.NS, t Traffic) (notes []string, err error) {
	v6 := t.To.Addr().Is6()
	payload := make([]byte, t.Size)
	copy(payload, "pktfate check")
	note := func(e error) {
		if len(notes) < 3 {
			notes = append(notes, fmt.Sprintf("%s to %s from %s: %v", t.Proto, t.To, t.From, e))
		}
	}
	switch {
	case t.Proto == "udp" && t.BadChecksum:
		err := sendBadUDP(ctx, ns, t, payload, note)
		return notes, err
	case t.Proto == "udp":
		lc := net.ListenConfig{Control: sockOpts(v6, t.TTL, 0)}
		var pc net.PacketConn
		local := net.JoinHostPort(addrOrAny(t.Src, v6), "0")
		if err := ns.Do(func() error {
			var err error
			pc, err = lc.ListenPacket(ctx, map[bool]string{false: "udp4", true: "udp6"}[v6], local)
			return err
		}); err != nil {
			return nil, fmt.Errorf("opening a UDP socket in %s: %w", t.From, err)
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
	case t.Proto == "tcp":
		d := net.Dialer{Timeout: time.Second, Control: sockOpts(v6, t.TTL, 0)}
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
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write(payload); err != nil {
				note(err)
			}
			conn.Close()
		}
	case t.Proto == "icmp":
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
			return nil, fmt.Errorf("opening an ICMP socket in %s: %w", t.From, err)
		}
		defer pc.Close()
		if t.TTL > 0 {
			if v6 {
				err = pc.IPv6PacketConn().SetHopLimit(t.TTL)
			} else {
				err = pc.IPv4PacketConn().SetTTL(t.TTL)
			}
			if err != nil {
				return nil, fmt.Errorf("setting the TTL: %w", err)
			}
		}
		for i := 0; i < t.Count && ctx.Err() == nil; i++ {
			msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: i + 1, Data: payload}}
			b, err := msg.Marshal(nil)
			if err != nil {
				return nil, err
			}
			if _, err := pc.WriteTo(b, &net.IPAddr{IP: t.To.Addr().AsSlice()}); err != nil {
				note(err)
			}
		}
	}
	return notes, nil
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
	v6 := t.To.Addr().Is6()
	network := map[bool]string{false: "ip4:udp", true: "ip6:udp"}[v6]
	var pc net.PacketConn
	var src netip.Addr
	err := ns.Do(func() error {
		// The source address the kernel will choose, for the pseudo-header.
		probe, err := net.DialUDP("udp", udpAddr(t.Src), net.UDPAddrFromAddrPort(t.To))
		if err != nil {
			return err
		}
		src = probe.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		probe.Close()
		pc, err = net.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("opening a raw UDP socket in %s: %w", t.From, err)
	}
	defer pc.Close()
	const sport = 40000
	n := 8 + len(payload)
	b := make([]byte, n)
	b[0], b[1] = sport>>8, sport&0xff
	b[2], b[3] = byte(t.To.Port()>>8), byte(t.To.Port())
	b[4], b[5] = byte(n>>8), byte(n)
	copy(b[8:], payload)
	sum := uint32(0)
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(t.To.Addr().AsSlice())
	add([]byte{0, 17, byte(n >> 8), byte(n)})
	add(b)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	good := ^uint16(sum)
	if good == 0 {
		good = 0xffff
	}
	bad := good ^ 0x5a5a
	b[6], b[7] = byte(bad>>8), byte(bad)
	dst := &net.IPAddr{IP: t.To.Addr().AsSlice()}
	for i := 0; i < t.Count && ctx.Err() == nil; i++ {
		if _, err := pc.WriteTo(b, dst); err != nil {
			note(err)
		}
	}
	return nil
}

func udpAddr(a netip.Addr) *net.UDPAddr {
	if !a.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
}
