package kmod

// Coverage beyond the inet hooks: bridge-family, arp and netdev chains,
// inet ingress, and chains at priority INT_MIN and INT_MAX loaded before
// and after the module.

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// bridged is namespaces x and y on one subnet, joined by bridge br0 in
// namespace b through its ports bx and by.
type bridged struct {
	x, y, b *netns.NS
	bx, by  int
	yAddr   netip.Addr
}

func newBridged(t *testing.T) *bridged {
	t.Helper()
	br := &bridged{x: testutil.NewNS(t), y: testutil.NewNS(t), b: testutil.NewNS(t), yAddr: netip.MustParseAddr("10.8.0.2")}
	ctx := context.Background()
	for _, args := range [][]string{{"link", "add", "br0", "type", "bridge"}, {"link", "set", "br0", "up"}} {
		if out, err := br.b.Exec(ctx, "", "ip", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	for _, p := range []struct {
		ns         *netns.NS
		name, port string
		addr       string
	}{{br.x, "x0", "bx", "10.8.0.1/24"}, {br.y, "y0", "by", "10.8.0.2/24"}} {
		if err := netns.Veth(p.ns, p.name, br.b, p.port); err != nil {
			t.Fatal(err)
		}
		if out, err := br.b.Exec(ctx, "", "ip", "link", "set", p.port, "master", "br0"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := p.ns.AddAddr(p.name, p.addr); err != nil {
			t.Fatal(err)
		}
	}
	br.bx, _ = br.b.Ifindex("bx")
	br.by, _ = br.b.Ifindex("by")
	return br
}

// TestKernelBridge: drops in the bridge family's prerouting and forward
// chains are reported with family bridge, the NF_BR_* hook and the
// bridge's ports; a datagram bridged through is not.
func TestKernelBridge(t *testing.T) {
	c := kernelClient(t)
	br := newBridged(t)
	const pre, fwd = 30501, 30502
	nft(t, br.b, fmt.Sprintf("table bridge pf {\n"+
		" chain pre { type filter hook prerouting priority 0; ether type ip ip protocol udp udp dport %d drop; }\n"+
		" chain through { type filter hook forward priority 0; ether type ip ip protocol udp udp dport %d drop; }\n}\n", pre, fwd))
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: br.b.Inode}}, unlimited)
	open, received := sink(t, br.y, "udp4")
	conn := udpSocket(t, br.x, "udp4")
	send(t, conn, netip.AddrPortFrom(br.yAddr, open)) // resolves y's address too
	if !waitFor(5*time.Second, func() bool { return received() == 1 }) {
		t.Fatal("the bridge does not forward")
	}
	send(t, conn, netip.AddrPortFrom(br.yAddr, pre))
	send(t, conn, netip.AddrPortFrom(br.yAddr, fwd))
	for _, w := range []struct {
		port    uint16
		hook    string
		in, out int
	}{{pre, "PRE_ROUTING", br.bx, 0}, {fwd, "FORWARD", br.bx, br.by}} {
		d, raw := dc.find(5*time.Second, toPort(w.port))
		if d == nil {
			t.Errorf("bridge %s: no drop reported (%+v)", w.hook, sessionStats(t, s))
			continue
		}
		if d.Family != NFProtoBridge || HookName(d.Family, d.Hook) != w.hook || d.Where != WhereChain || d.Netns != br.b.Inode ||
			d.InIfindex != uint32(w.in) || d.OutIfindex != uint32(w.out) || d.Protocol != 0x0800 {
			t.Errorf("bridge %s: %+v, want in %d out %d", w.hook, d, w.in, w.out)
		}
		if w.hook == "FORWARD" {
			record(t, "drop_bridge_forward.hex", "DROP event of UDP dropped by an nftables bridge-family forward chain", raw)
		}
	}
	if n := dc.count(toPort(open)); n != 0 {
		t.Errorf("%d events for the datagram bridged through", n)
	}
}

// TestKernelARP: ARP requests dropped by arp-family chains, in input and
// in output, are reported with family arp and NF_ARP_IN or NF_ARP_OUT.
func TestKernelARP(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	nft(t, top.Router, "table arp pf {\n chain in { type filter hook input priority 0; arp operation request drop; }\n"+
		" chain out { type filter hook output priority 0; arp operation request drop; }\n}\n")
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode, Families: FamilyARP}}, unlimited)
	r0, _ := top.Router.Ifindex("r0")
	r1, _ := top.Router.Ifindex("r1")
	f := testutil.RouterFamilies[0]
	// The client asks for the router's address, the router for the server's.
	send(t, udpSocket(t, top.Client, "udp4"), netip.AddrPortFrom(f.RouterIn, 9))
	send(t, udpSocket(t, top.Router, "udp4"), netip.AddrPortFrom(f.Server, 9))
	for _, w := range []struct {
		hook    string
		in, out int
	}{{"IN", r0, 0}, {"OUT", 0, r1}} {
		d, _ := dc.find(5*time.Second, func(d *Drop) bool { return HookName(d.Family, d.Hook) == w.hook })
		if d == nil {
			t.Errorf("arp %s: no drop reported (%+v)", w.hook, sessionStats(t, s))
			continue
		}
		if d.Family != NFProtoARP || d.Where != WhereChain || d.Netns != top.Router.Inode || d.Protocol != 0x0806 ||
			d.InIfindex != uint32(w.in) || d.OutIfindex != uint32(w.out) || len(d.Payload) < 28 {
			t.Errorf("arp %s: %+v, want in %d out %d", w.hook, d, w.in, w.out)
		}
	}
}

// TestKernelNetdev: drops in a device's netdev ingress and egress chains
// and in an inet ingress chain are reported with family netdev and
// NF_NETDEV_INGRESS or NF_NETDEV_EGRESS; a forwarded datagram is not.
func TestKernelNetdev(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	const ing, eg, inetIng = 30601, 30602, 30603
	nft(t, top.Router, fmt.Sprintf("table netdev pf {\n"+
		" chain ing { type filter hook ingress device r0 priority 0; ip protocol udp udp dport %d drop; }\n"+
		" chain eg { type filter hook egress device r1 priority 0; ip protocol udp udp dport %d drop; }\n}\n"+
		"table inet pf2 {\n chain ing { type filter hook ingress device r0 priority 0; udp dport %d drop; }\n}\n", ing, eg, inetIng))
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	r0, _ := top.Router.Ifindex("r0")
	r1, _ := top.Router.Ifindex("r1")
	f := testutil.RouterFamilies[0]
	open, received := sink(t, top.Server, "udp4")
	conn := udpSocket(t, top.Client, "udp4")
	send(t, conn, netip.AddrPortFrom(f.Server, open))
	if !waitFor(5*time.Second, func() bool { return received() == 1 }) {
		t.Fatal("the router does not forward")
	}
	for _, p := range []uint16{ing, eg, inetIng} {
		send(t, conn, netip.AddrPortFrom(f.Server, p))
	}
	for _, w := range []struct {
		port    uint16
		hook    string
		in, out int
	}{{ing, "INGRESS", r0, 0}, {eg, "EGRESS", 0, r1}, {inetIng, "INGRESS", r0, 0}} {
		d, raw := dc.find(5*time.Second, toPort(w.port))
		if d == nil {
			t.Errorf("netdev %s (port %d): no drop reported (%+v)", w.hook, w.port, sessionStats(t, s))
			continue
		}
		if d.Family != NFProtoNetdev || HookName(d.Family, d.Hook) != w.hook || d.Where != WhereChain || d.Netns != top.Router.Inode ||
			d.InIfindex != uint32(w.in) || d.OutIfindex != uint32(w.out) {
			t.Errorf("netdev %s (port %d): %+v, want in %d out %d", w.hook, w.port, d, w.in, w.out)
		}
		if w.port == ing {
			record(t, "drop_netdev_ingress.hex", "DROP event of UDP dropped by an nftables netdev ingress chain", raw)
		}
	}
	if n := dc.count(toPort(open)); n != 0 {
		t.Errorf("%d events for the forwarded datagram", n)
	}
}

// extremeChains is an input chain at priority INT_MIN dropping UDP to
// first and one at INT_MAX dropping UDP to last.
func extremeChains(table string, first, last uint16) string {
	return fmt.Sprintf("table inet %s {\n"+
		" chain first { type filter hook input priority -2147483648; udp dport %d drop; }\n"+
		" chain last { type filter hook input priority 2147483647; udp dport %d drop; }\n}\n", table, first, last)
}

// TestKernelExtremePriorities: chains at priority INT_MIN and INT_MAX.
// Loaded before the module, the INT_MIN chain runs after the module's
// first entry (reported in the chain) and the INT_MAX chain after its last
// (reported as the tail). Loaded after, the INT_MAX chain runs before the
// last entry, and the INT_MIN chain before the first until the module
// moves its entry back in front: then its drops are reported too.
func TestKernelExtremePriorities(t *testing.T) {
	top := testutil.NewRouter(t)
	f := testutil.RouterFamilies[0]
	nft(t, top.Router, extremeChains("before", 30701, 30702))
	c := kernelClient(t)
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	conn := udpSocket(t, top.Client, "udp4")
	m := moduleStats(t, c)
	if m.TailChains == 0 {
		t.Errorf("no tail chain reported with an INT_MAX chain older than the module: %+v", m)
	}
	send(t, conn, netip.AddrPortFrom(f.RouterIn, 30701))
	send(t, conn, netip.AddrPortFrom(f.RouterIn, 30702))
	for _, w := range []struct {
		port  uint16
		where Where
	}{{30701, WhereChain}, {30702, WhereTail}} {
		d, raw := dc.find(5*time.Second, toPort(w.port))
		if d == nil {
			t.Errorf("chain loaded before the module, port %d: no drop reported (%+v)", w.port, sessionStats(t, s))
			continue
		}
		if d.Where != w.where || HookName(d.Family, d.Hook) != "LOCAL_IN" || d.Family != NFProtoIPv4 || d.Netns != top.Router.Inode {
			t.Errorf("port %d: %+v, want where %s", w.port, d, w.where)
		}
		if w.where == WhereTail {
			record(t, "drop_tail_local_in.hex", "DROP event of UDP dropped by an INT_MAX input chain loaded before the module", raw)
		}
	}

	nft(t, top.Router, extremeChains("after", 30703, 30704))
	m0 := moduleStats(t, c)
	// The INT_MIN chain now runs first: other packets through the same
	// hook let the module notice and move its entry back in front.
	var got *Drop
	waitFor(10*time.Second, func() bool {
		send(t, conn, netip.AddrPortFrom(f.RouterIn, 30705))
		send(t, conn, netip.AddrPortFrom(f.RouterIn, 30703))
		got, _ = dc.find(100*time.Millisecond, toPort(30703))
		return got != nil
	})
	if got == nil || got.Where != WhereChain {
		t.Errorf("INT_MIN chain loaded after the module: %+v (%+v)", got, moduleStats(t, c))
	}
	if m := moduleStats(t, c); m.Rebracketed <= m0.Rebracketed {
		t.Errorf("rebracketed %d -> %d, want the module's entry moved", m0.Rebracketed, m.Rebracketed)
	}
	send(t, conn, netip.AddrPortFrom(f.RouterIn, 30704))
	if d, _ := dc.find(5*time.Second, toPort(30704)); d == nil || d.Where != WhereChain {
		t.Errorf("INT_MAX chain loaded after the module: %+v", d)
	}
}
