package tracer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
)

// running is an ebpf source delivering into a collector until stop.
type running struct {
	src  *tracer.EBPF
	col  *collector
	stop func()
}

func startEBPF(t *testing.T, cfg tracer.EBPFConfig) *running {
	t.Helper()
	src := tracer.NewEBPF(cfg)
	if err := src.Start(); err != nil {
		src.Close()
		t.Fatal(err)
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, fate.EventFunc(col.handle)) }()
	r := &running{src: src, col: col}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		src.Close()
	}
	t.Cleanup(func() {
		if r.stop != nil {
			r.stop()
		}
	})
	return r
}

// find returns the first event match accepts, waiting up to d.
func (c *collector) find(d time.Duration, match func(*fate.Event) bool) *fate.Event {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		c.mu.Lock()
		for _, e := range c.events {
			if match(e) {
				c.mu.Unlock()
				return e
			}
		}
		c.mu.Unlock()
		if time.Now().After(end) {
			return nil
		}
	}
}

func (c *collector) all(match func(*fate.Event) bool) []*fate.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*fate.Event
	for _, e := range c.events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// counterValue finds a counter by its key ("nf_stolen").
func counterValue(cs []fate.Loss, key string) (uint64, bool) {
	for _, c := range cs {
		if c.Key() == key {
			return c.Value, true
		}
	}
	return 0, false
}

// TestSocketLevelDropsKeepNetns: drops whose skb no longer holds a device
// (a UDP socket closed with unread datagrams, fragments purged from a
// reassembly queue, a TCP segment dropped by its socket) pass
// --filter-netns with the namespace and the interface they arrived on.
// Before, their netns was 0 and the filter hid them.
func TestSocketLevelDropsKeepNetns(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	r := startEBPF(t, tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode})
	inNS := func(e *fate.Event) bool {
		return e.Netns == ns.Inode && e.Ifindex == 1 && e.Iif == 1
	}

	t.Run("udp socket closed unread", func(t *testing.T) {
		var conn *net.UDPConn
		if err := ns.Do(func() error {
			var err error
			conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := ns.SendUDP("udp4", dst, 3, []byte("unread")); err != nil {
			t.Fatal(err)
		}
		// Wait until the datagrams are queued, then close without reading.
		time.Sleep(50 * time.Millisecond)
		conn.Close()
		match := func(e *fate.Event) bool {
			return e.Fate == fate.FateDrop && e.Packet.Proto == "udp" && e.Packet.Dport == dst.Port()
		}
		if e := r.col.find(5*time.Second, match); e == nil {
			t.Fatal("no drop of the unread datagrams: hidden by the netns filter")
		} else if !inNS(e) || e.IfindexFrom != "iif" {
			t.Errorf("drop in netns %d (from %q) on ifindex %d (from %q) iif %d, want %d on lo (1)",
				e.Netns, e.NetnsFrom, e.Ifindex, e.IfindexFrom, e.Iif, ns.Inode)
		}
		if n := len(r.col.all(match)); n != 3 {
			t.Errorf("%d drops of unread datagrams, want 3", n)
		}
	})

	t.Run("fragments purged", func(t *testing.T) {
		if err := ns.Sysctl("net/ipv4/ipfrag_time", "1"); err != nil {
			t.Fatal(err)
		}
		const id = 0x5046
		if err := sendFragments(ns, id); err != nil {
			t.Fatal(err)
		}
		frag := func(e *fate.Event) bool {
			return e.Fate == fate.FateDrop && len(e.Data) >= 6 && binary.BigEndian.Uint16(e.Data[4:]) == id &&
				e.Packet.Proto != "" && e.Packet.Src == netip.MustParseAddr("127.0.0.1")
		}
		// The queue times out after a second: its head and the other
		// fragments are freed.
		deadline := time.Now().Add(10 * time.Second)
		for len(r.col.all(frag)) < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		got := r.col.all(frag)
		if len(got) != 2 {
			t.Fatalf("%d fragment drops, want 2 (both queued fragments)", len(got))
		}
		for _, e := range got {
			if !inNS(e) {
				t.Errorf("fragment drop %s at %s in netns %d (from %q) ifindex %d (from %q), want %d on lo",
					e.Reason, e.Location, e.Netns, e.NetnsFrom, e.Ifindex, e.IfindexFrom, ns.Inode)
			}
		}
	})

	t.Run("tcp segment dropped by its socket", func(t *testing.T) {
		// A listener that accepts and closes: the client's data after the
		// server's close reaches a closing socket, which drops it. The
		// client writes once it has read the server's FIN (data sent
		// before the close would be queued and purged with the socket),
		// and a long FIN timeout keeps the orphan in FIN_WAIT2 rather than
		// a timewait socket, which drops elsewhere.
		if err := ns.Sysctl("net.ipv4.tcp_fin_timeout", "120"); err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		if err := ns.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
		}()
		var c net.Conn
		if err := ns.Do(func() error {
			var err error
			c, err = net.Dial("tcp4", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("reading the server's FIN: %d bytes, %v", n, err)
		}
		match := func(e *fate.Event) bool {
			return e.Fate == fate.FateDrop && e.Packet.Proto == "tcp" && e.Packet.Dport == port
		}
		if _, err := c.Write([]byte("after close")); err != nil {
			t.Fatal(err)
		}
		e := r.col.find(10*time.Second, match)
		if e == nil {
			for _, x := range r.col.all(func(e *fate.Event) bool { return e.Packet.Proto == "tcp" }) {
				t.Logf("seen: %s %s %s at %s netns %d (%s) dport %d flags %s", x.Probe, x.Fate, x.Reason, x.Location, x.Netns, x.NetnsFrom, x.Packet.Dport, fate.TCPFlagString(x.Packet.TCPFlags))
			}
			t.Fatal("no socket-level TCP drop reported in the namespace")
		}
		if !inNS(e) {
			t.Errorf("TCP drop %s at %s in netns %d (from %q) ifindex %d (from %q), want %d on lo",
				e.Reason, e.Location, e.Netns, e.NetnsFrom, e.Ifindex, e.IfindexFrom, ns.Inode)
		}
		t.Logf("TCP drop %s at %s: netns from %s, ifindex from %s", e.Reason, e.Location, e.NetnsFrom, e.IfindexFrom)
	})

	r.stop()
	r.stop = nil
	assertNoLoss(t, r.src.Losses())
	// What only the arrival interface placed in the namespace is counted
	// (another namespace's interface of that index would be taken for it).
	byIif := len(r.col.all(func(e *fate.Event) bool { return e.NetnsFrom == "iif" }))
	var counted uint64
	found := false
	for _, l := range r.src.Information() {
		if l.Observer == fate.ObserverEBPF && l.Name == "netns_by_iif" {
			counted, found = l.Value, true
		}
	}
	if !found || counted != uint64(byIif) {
		t.Errorf("ebpf netns_by_iif %d (listed %v), want the %d events placed by their interface", counted, found, byIif)
	}
	t.Logf("%d events placed in the namespace by their arrival interface", byIif)
}

// sendFragments sends two fragments of a UDP datagram over lo, the last
// one missing, with IP ID id.
func sendFragments(ns *netns.NS, id uint16) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		lo := [4]byte{127, 0, 0, 1}
		for _, f := range []struct {
			off     int
			payload []byte
		}{{0, make([]byte, 16)}, {16, make([]byte, 16)}} {
			b := make([]byte, 20+len(f.payload))
			b[0] = 0x45
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
			binary.BigEndian.PutUint16(b[4:], id)
			binary.BigEndian.PutUint16(b[6:], uint16(f.off/8)|0x2000) // more fragments
			b[8], b[9] = 64, unix.IPPROTO_UDP
			copy(b[12:], lo[:])
			copy(b[16:], lo[:])
			copy(b[20:], f.payload)
			if f.off == 0 { // a UDP header to port 9
				binary.BigEndian.PutUint16(b[20:], 40000)
				binary.BigEndian.PutUint16(b[22:], 9)
				binary.BigEndian.PutUint16(b[24:], 48)
			}
			if err := unix.Sendto(fd, b, 0, &unix.SockaddrInet4{Addr: lo}); err != nil {
				return fmt.Errorf("sending a fragment: %w", err)
			}
		}
		return nil
	})
}

// TestNonPacketsCountedNotShown: netlink buffers in the namespace are not
// network packets: counted (not_packets), not shown, unless asked for.
func TestNonPacketsCountedNotShown(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	netlinkTraffic := func() {
		for range 5 {
			if err := ns.Do(func() error { _, err := net.Interfaces(); return err }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Flagged by the program, or (shown without the flag) a buffer with no
	// protocol and no MAC header.
	notPacket := func(e *fate.Event) bool { return e.NotPacket || e.EtherType == 0 && !e.HadMAC }

	r := startEBPF(t, tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode})
	netlinkTraffic()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := counterValue(r.src.Information(), "ebpf_not_packets")
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("netlink traffic in the namespace: not_packets stayed 0")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.col.all(notPacket); len(got) != 0 {
		t.Errorf("%d non-packets shown by default (first: %+v)", len(got), got[0])
	}
	r.stop()
	r.stop = nil

	r = startEBPF(t, tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode, ShowNonPackets: true})
	netlinkTraffic()
	e := r.col.find(10*time.Second, notPacket)
	if e == nil {
		all := r.col.all(func(*fate.Event) bool { return true })
		for i, e := range all[:min(len(all), 5)] {
			t.Logf("event %d: %s %s probe %s family %d ethertype %#x mac %v not_packet %v netns %d from %s", i, e.Fate, e.Location,
				e.Probe, e.SockFamily, e.EtherType, e.HadMAC, e.NotPacket, e.Netns, e.NetnsFrom)
		}
		t.Fatalf("ShowNonPackets: no netlink buffer shown (%d events)", len(all))
	}
	if !e.NotPacket || e.Packet.Proto != "" || e.SockFamily != unix.AF_NETLINK {
		t.Errorf("netlink buffer: not_packet %v, decoded as %q, socket family %d (want netlink %d)",
			e.NotPacket, e.Packet.Proto, e.SockFamily, unix.AF_NETLINK)
	}
}

// TestTapCloneIsACopy: a packet socket's copy (what tcpdump holds) shares
// the packet's data buffer; the original's drop says its data is still
// shared, and the tap's consume names the packet socket and the same
// buffer: a copy released, not the packet's fate.
func TestTapCloneIsACopy(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r := startEBPF(t, tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode})
	const port = 9
	if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 1, []byte("tapped")); err != nil {
		t.Fatal(err)
	}
	drop := r.col.find(5*time.Second, func(e *fate.Event) bool {
		return e.Fate == fate.FateDrop && e.Packet.Proto == "udp" && e.Packet.Dport == port
	})
	if drop == nil {
		t.Fatal("no drop of the tapped packet")
	}
	if !drop.Cloned || !drop.DataShared || drop.Head == 0 {
		t.Errorf("drop with a tap's copy alive: cloned %v shared %v head %#x, want cloned, shared", drop.Cloned, drop.DataShared, drop.Head)
	}
	// Read the tap's copies: each is freed from the packet socket.
	buf := make([]byte, 2048)
	unix.SetNonblock(fd, true)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if _, _, err := unix.Recvfrom(fd, buf, 0); err != nil {
			if r.col.find(0, func(e *fate.Event) bool { return e.Head == drop.Head && e.SockFamily == unix.AF_PACKET }) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tap := r.col.find(2*time.Second, func(e *fate.Event) bool {
		return e.Fate == fate.FateConsume && e.Head == drop.Head && e.Skb != drop.Skb
	})
	if tap == nil {
		t.Fatal("no consume of the tap's copy sharing the drop's data buffer")
	}
	if tap.SockFamily != unix.AF_PACKET || !tap.Cloned {
		t.Errorf("tap's copy: socket family %d cloned %v, want AF_PACKET (%d), cloned", tap.SockFamily, tap.Cloned, unix.AF_PACKET)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestDeliveredIsSeenRead: a TCP stream's segments are seen when the
// socket reads them (a consume with Probe "read"), on kernels that free
// delivered packets without any tracepoint too.
func TestDeliveredIsSeenRead(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	r := startEBPF(t, tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode})
	if len(r.src.Deliveries) == 0 || r.src.Deliveries[0] != "read" {
		t.Fatalf("deliveries seen by %v, want read first", r.src.Deliveries)
	}
	if vm := testutil.InVM(); vm != "" && r.src.DeliveriesBlind != "" {
		t.Errorf("kernel %s has fentry: %s", vm, r.src.DeliveriesBlind)
	}
	t.Logf("deliveries: %v; blind: %q", r.src.Deliveries, r.src.DeliveriesBlind)
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		b := make([]byte, 5)
		_, err = c.Read(b)
		got <- err
	}()
	var c net.Conn
	if err := ns.Do(func() error {
		var err error
		c, err = net.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	e := r.col.find(5*time.Second, func(e *fate.Event) bool {
		return e.Probe == "read" && e.Packet.Proto == "tcp" && e.Packet.Dport == port
	})
	if e == nil {
		t.Fatal("the read of the delivered segment was not seen")
	}
	if e.Fate != fate.FateConsume || e.Netns != ns.Inode || !strings.Contains(e.Location, "skb_copy_datagram_iovec") {
		t.Errorf("read: fate %s netns %d location %q", e.Fate, e.Netns, e.Location)
	}
	if n := len(r.col.all(func(e *fate.Event) bool {
		return e.Probe == "read" && e.Packet.Dport == port && e.Packet.PayloadLen > 0
	})); n != 1 {
		t.Errorf("%d reads of the one data segment, want 1", n)
	}
	// Its free after the read is the same delivery, not a second one
	// (whichever CPU frees it). A drop sent afterwards marks the point in
	// the ring by which that free would have arrived.
	if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 1, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if r.col.find(5*time.Second, func(e *fate.Event) bool { return e.Fate == fate.FateDrop && e.Packet.Dport == 9 }) == nil {
		t.Fatal("the marker drop was not seen")
	}
	if evs := r.col.all(func(e *fate.Event) bool {
		return e.Fate == fate.FateConsume && e.Packet.Dport == port && e.Packet.PayloadLen > 0
	}); len(evs) != 1 {
		for _, e := range evs {
			t.Logf("%s at %s cpu %d", e.Probe, e.Location, e.CPU)
		}
		t.Errorf("%d deliveries of the one data segment, want 1", len(evs))
	}
}

// nfMethods returns the netfilter attribution methods this kernel offers.
func nfMethods(t *testing.T) []string {
	var methods []string
	if tracer.FexitSupported() == nil {
		methods = append(methods, tracer.NetfilterFexit)
	}
	if tracer.NetfilterLinksSupported() == nil {
		methods = append(methods, tracer.NetfilterLinks)
	}
	if len(methods) == 0 {
		t.Skip("kernel has neither fexit nor BPF netfilter links")
	}
	return methods
}

// TestStolenFragmentsAreNotLost: conntrack's defragmentation queues
// fragments inside PRE_ROUTING, so they never reach the last priority. With
// links their entries used to fill the in-flight stack and count as lost
// (nf_inflight_full); now they are retired as stolen, counted as
// information.
func TestStolenFragmentsAreNotLost(t *testing.T) {
	testutil.RequireRoot(t)
	top := testutil.NewRouter(t)
	ctx := context.Background()
	ruleset := "table ip pktfate_ct {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n  ct state new accept\n }\n}\n"
	if out, err := top.Router.Exec(ctx, ruleset, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	dst := netip.AddrPortFrom(testutil.RouterFamilies[0].Server, 9)
	for _, method := range nfMethods(t) {
		t.Run(method, func(t *testing.T) {
			r := startEBPF(t, tracer.EBPFConfig{Drops: true, FilterNetns: top.Router.Inode,
				Netfilter: true, NetfilterNetns: top.RouterPath, NetfilterMethod: method})
			const datagrams = 20
			if err := top.Client.Do(func() error {
				// Unconnected: the server's port unreachable errors do not fail the writes.
				c, err := net.ListenUDP("udp4", nil)
				if err != nil {
					return err
				}
				defer c.Close()
				raw, err := c.SyscallConn()
				if err != nil {
					return err
				}
				var serr error
				raw.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
				})
				if serr != nil {
					return serr
				}
				for range datagrams {
					if _, err := c.WriteToUDPAddrPort(make([]byte, 4000), dst); err != nil { // three fragments at MTU 1500
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// The server has no socket on port 9: each reassembled datagram
			// is dropped there, after the router forwarded it.
			deadline := time.Now().Add(5 * time.Second)
			var stolen uint64
			for time.Now().Before(deadline) {
				stolen, _ = counterValue(r.src.Information(), "nf_stolen")
				if method != tracer.NetfilterLinks || stolen >= 2*datagrams {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			r.stop()
			r.stop = nil
			full, _ := counterValue(r.src.Losses(), "nf_inflight_full")
			if full != 0 {
				t.Errorf("nf_inflight_full = %d: stolen fragments counted as lost", full)
			}
			stale, _ := counterValue(r.src.Information(), "nf_stale")
			if method == tracer.NetfilterLinks && stolen < 2*datagrams {
				t.Errorf("nf_stolen = %d, want at least %d (two queued fragments a datagram)", stolen, 2*datagrams)
			}
			t.Logf("%s: nf_stolen %d, nf_stale %d, nf_inflight_full %d", method, stolen, stale, full)
		})
	}
}

// TestReturnedChainsAreNotStale: a chain that runs and returns leaves the
// in-flight stack at its exit, neither stolen nor stale. Until 2106461 each
// exit asked the entry's age against a time of 0, and every chain that
// returned was counted in nf_stale: two a packet under a flood on 6.12.
func TestReturnedChainsAreNotStale(t *testing.T) {
	testutil.RequireRoot(t)
	top := testutil.NewRouter(t)
	ctx := context.Background()
	ruleset := "table ip pktfate_out {\n chain out {\n  type filter hook output priority 0; policy accept;\n }\n}\n"
	if out, err := top.Router.Exec(ctx, ruleset, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	for _, method := range nfMethods(t) {
		t.Run(method, func(t *testing.T) {
			r := startEBPF(t, tracer.EBPFConfig{Drops: true, FilterNetns: top.Router.Inode,
				Netfilter: true, NetfilterNetns: top.RouterPath, NetfilterMethod: method})
			if method == tracer.NetfilterLinks {
				waitCovered(t, r.src, top.Router.Inode)
			}
			const datagrams = 50
			dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 9) // closed
			if err := top.Router.SendUDP("udp4", dst, datagrams, []byte("pktfate stale")); err != nil {
				t.Fatal(err)
			}
			// Each passed the output chain, which returned, and was dropped
			// after it (NO_SOCKET): once the drops are in, so are the exits.
			noSocket := func(e *fate.Event) bool { return e.Reason == "NO_SOCKET" && e.Netns == top.Router.Inode }
			for end := time.Now().Add(10 * time.Second); len(r.col.all(noSocket)) < datagrams && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(r.col.all(noSocket)); n < datagrams {
				t.Fatalf("%d of %d drops seen", n, datagrams)
			}
			stale, _ := counterValue(r.src.Information(), "nf_stale")
			stolen, _ := counterValue(r.src.Information(), "nf_stolen")
			t.Logf("%s: nf_stale %d, nf_stolen %d for %d datagrams through a chain that returned", method, stale, stolen, datagrams)
			if stale >= datagrams/2 || stolen >= datagrams/2 {
				t.Errorf("nf_stale %d, nf_stolen %d for %d datagrams whose chain returned: want neither", stale, stolen, datagrams)
			}
		})
	}
}

// TestBridgeDropAttribution: a drop in a bridge-family chain is attributed
// to its hook where the method brackets that family (fexit), and otherwise
// says why netfilter attribution could not see it (links: no link type for
// the bridge family).
func TestBridgeDropAttribution(t *testing.T) {
	testutil.RequireRoot(t)
	name := fmt.Sprintf("pktfate-br-%d", time.Now().UnixNano()%1e9)
	br, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	ctx := context.Background()
	if out, err := br.Exec(ctx, "", "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		if strings.Contains(string(out), "Unknown device type") {
			t.Skipf("this kernel has no bridge device (module bridge not loaded): %s", out)
		}
		t.Fatalf("ip link add br0 type bridge: %v: %s", err, out)
	}
	steps := []func() error{
		func() error { return netns.Veth(a, "a0", br, "ba") },
		func() error { return netns.Veth(b, "b0", br, "bb") },
		func() error { _, err := br.Exec(ctx, "", "ip", "link", "set", "ba", "master", "br0"); return err },
		func() error { _, err := br.Exec(ctx, "", "ip", "link", "set", "bb", "master", "br0"); return err },
		func() error { return br.LinkUp("br0") },
		func() error { return a.AddAddr("a0", "203.0.113.1/24") },
		func() error { return b.AddAddr("b0", "203.0.113.2/24") },
	}
	for _, f := range steps {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	// The bridge forwards: a datagram to an open port of b arrives.
	var rx *net.UDPConn
	if err := b.Do(func() error {
		var err error
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(203, 0, 113, 2), Port: 8})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	arrived := make(chan error, 1)
	go func() {
		rx.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := rx.Read(make([]byte, 64))
		arrived <- err
	}()
	for forwarded := false; !forwarded; {
		if err := a.SendUDP("udp4", netip.MustParseAddrPort("203.0.113.2:8"), 1, []byte("bridged")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-arrived:
			if err != nil {
				out, _ := br.Exec(ctx, "", "ip", "-d", "link", "show")
				t.Fatalf("the bridge does not forward: %v\n%s", err, out)
			}
			forwarded = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	const port = 7
	ruleset := fmt.Sprintf("table bridge pktfate_br {\n chain brfwd {\n  type filter hook forward priority 0; policy accept;\n  udp dport %d counter drop\n  counter\n }\n}\n", port)
	if out, err := br.Exec(ctx, ruleset, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft bridge table: %v: %s", err, out)
	}
	for _, method := range nfMethods(t) {
		t.Run(method, func(t *testing.T) {
			r := startEBPF(t, tracer.EBPFConfig{Drops: true, FilterNetns: br.Inode,
				Netfilter: true, NetfilterNetns: "/run/netns/" + name, NetfilterMethod: method})
			match := func(e *fate.Event) bool {
				return e.Fate == fate.FateDrop && e.Packet.Proto == "udp" && e.Packet.Dport == port
			}
			var e *fate.Event
			for end := time.Now().Add(10 * time.Second); e == nil && time.Now().Before(end); {
				// The first datagrams may wait on ARP; send until one is dropped.
				if err := a.SendUDP("udp4", netip.MustParseAddrPort(fmt.Sprintf("203.0.113.2:%d", port)), 1, []byte("bridged")); err != nil {
					t.Fatal(err)
				}
				e = r.col.find(200*time.Millisecond, match)
			}
			if e == nil {
				for _, x := range r.col.all(func(*fate.Event) bool { return true }) {
					t.Logf("seen: %s %s %s at %s netns %d dev %q %s", x.Probe, x.Fate, x.Reason, x.Location, x.Netns, x.Ifname, x.Packet.Proto)
				}
				out, _ := br.Exec(ctx, "", "nft", "list", "ruleset")
				t.Logf("ruleset:\n%s", out)
				t.Fatal("no drop of the bridged datagram")
			}
			if e.Reason != "NETFILTER_DROP" {
				t.Fatalf("drop %s at %s, want NETFILTER_DROP", e.Reason, e.Location)
			}
			switch method {
			case tracer.NetfilterFexit:
				if e.Family != "bridge" || e.Hook != "FORWARD" || e.Verdict != "drop" || e.NFBlind != "" {
					t.Errorf("fexit: attributed to %q %q verdict %q (blind %q), want bridge FORWARD drop", e.Family, e.Hook, e.Verdict, e.NFBlind)
				}
			case tracer.NetfilterLinks:
				if e.Hook != "" || !strings.Contains(e.NFBlind, "bridge") {
					t.Errorf("links: hook %q, blind %q: want no hook and a reason naming the bridge family", e.Hook, e.NFBlind)
				}
			}
			t.Logf("%s: %s %s at %s, hook %q %q, blind %q", method, e.Fate, e.Reason, e.Location, e.Family, e.Hook, e.NFBlind)
		})
	}
}
