package tracer_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
)

// collector keeps the events of a running source.
type collector struct {
	mu     sync.Mutex
	events []*fate.Event
}

func (c *collector) handle(e *fate.Event) {
	c.mu.Lock()
	c.events = append(c.events, e.Clone())
	c.mu.Unlock()
}

// waitFor returns the first UDP event to port, waiting up to d.
func (c *collector) waitFor(port uint16, d time.Duration) *fate.Event {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		c.mu.Lock()
		for _, e := range c.events {
			if e.Packet.Proto == "udp" && e.Packet.Dport == port {
				c.mu.Unlock()
				return e
			}
		}
		c.mu.Unlock()
	}
	return nil
}

// waitCovered waits until the source's netfilter links cover the
// namespace: they attach where a chain is, looked for every second.
func waitCovered(t *testing.T, src *tracer.EBPF, ino uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !src.NetfilterCovers(ino, tracer.MonoNow()) {
		if time.Now().After(deadline) {
			t.Fatal("the namespace's netfilter links not attached within 10 s of its first chain")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addChain gives ns an nftables base chain that accepts everything.
func addChain(t *testing.T, ns *netns.NS) {
	t.Helper()
	if out, err := ns.Exec(context.Background(), "table inet pktfate_test { chain in { type filter hook input priority 0; }; }\n", "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

func sendFrom(t *testing.T, ns *netns.NS, network string, dst netip.AddrPort) {
	t.Helper()
	if err := ns.SendUDP(network, dst, 1, []byte("pktfate nf")); err != nil {
		t.Fatal(err)
	}
}

// TestNetfilterHookAttribution puts a DROP (and a REJECT where the hook
// allows one) on each of the five inet hooks with iptables-legacy,
// iptables-nft and nftables, for IPv4 and IPv6, and checks that the drop
// is attributed to the hook the rule is on, every time; traffic no rule
// drops is never attributed to netfilter.
func TestNetfilterHookAttribution(t *testing.T) {
	testutil.RequireRoot(t)
	var methods []string
	lerr, ferr := tracer.NetfilterLinksSupported(), tracer.FexitSupported()
	if lerr == nil {
		methods = append(methods, tracer.NetfilterLinks)
	}
	if ferr == nil {
		methods = append(methods, tracer.NetfilterFexit)
	}
	switch vm := testutil.InVM(); {
	case len(methods) == 0:
		t.Fatalf("no netfilter attribution method: links: %v; fexit: %v", lerr, ferr)
	case vm == "6.1" && lerr == nil:
		t.Error("kernel 6.1 claims BPF netfilter links (they arrived in 6.4)")
	case vm != "" && vm != "6.1" && len(methods) != 2:
		t.Errorf("kernel %s should offer links and fexit: links: %v; fexit: %v", vm, lerr, ferr)
	case vm != "" && ferr != nil:
		t.Errorf("kernel %s should offer fexit: %v", vm, ferr)
	}
	for _, tool := range []string{"iptables-legacy", "iptables-nft", "nftables"} {
		bin := "nft"
		if tool != "nftables" {
			bin = "iptables-" + strings.TrimPrefix(tool, "iptables-")
		}
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s needs %s (make deps installs it): %v", tool, bin, err)
		}
	}
	top := testutil.NewRouter(t)
	port := uint16(20000)
	for _, method := range methods {
		t.Run(method, func(t *testing.T) { testHookAttribution(t, top, method, &port) })
	}
}

func testHookAttribution(t *testing.T, top *testutil.Router, method string, port *uint16) {
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, FilterNetns: top.Router.Inode,
		Netfilter: true, NetfilterNetns: top.RouterPath, NetfilterMethod: method})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.NetfilterMethod != method {
		t.Fatalf("method in use %q, want %q", src.NetfilterMethod, method)
	}
	var col collector
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, fate.EventFunc(col.handle)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		for _, c := range src.Losses() {
			if c.Value != 0 {
				t.Errorf("lost %s=%d", c.Name, c.Value)
			}
		}
	}()

	for _, tool := range []string{"iptables-legacy", "iptables-nft", "nftables"} {
		for _, fam := range testutil.RouterFamilies {
			for _, hook := range []string{"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING"} {
				targets := []string{"DROP"}
				if hook == "LOCAL_IN" || hook == "FORWARD" || hook == "LOCAL_OUT" {
					targets = append(targets, "REJECT")
				}
				for _, target := range targets {
					*port++
					name := fmt.Sprintf("%s/%s/%s/%s", tool, fam.Network, hook, target)
					if err := testutil.AddRule(ctx, top.Router, tool, fam.Network, hook, target, *port); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if method == tracer.NetfilterLinks {
						waitCovered(t, src, top.Router.Inode)
					}
					from, dst := top.Client, fam.Server
					switch hook {
					case "PRE_ROUTING", "LOCAL_IN":
						dst = fam.RouterIn
					case "LOCAL_OUT":
						from = top.Router
					}
					sendFrom(t, from, fam.Network, netip.AddrPortFrom(dst, *port))
					e := col.waitFor(*port, 10*time.Second)
					switch {
					case e == nil:
						t.Errorf("%s: no drop reported", name)
					case e.Fate != fate.FateDrop || e.Reason != "NETFILTER_DROP":
						t.Errorf("%s: got %s %s at %s, want drop NETFILTER_DROP", name, e.Fate, e.Reason, e.Location)
					case e.Hook != hook || e.Family != map[string]string{"udp4": "ipv4", "udp6": "ipv6"}[fam.Network] || e.Verdict != "drop":
						t.Errorf("%s: attributed to %q %q verdict %q", name, e.Family, e.Hook, e.Verdict)
					}
					if e != nil {
						t.Logf("%s: %s %s at %s in %s %s", name, e.Fate, e.Reason, e.Location, e.Family, e.Hook)
					}
					if err := testutil.FlushRules(ctx, top.Router, tool); err != nil {
						t.Fatal(err)
					}
				}
			}
			// No rule: a packet to a closed port of the router is dropped by
			// UDP, not inside netfilter.
			*port++
			sendFrom(t, top.Client, fam.Network, netip.AddrPortFrom(fam.RouterIn, *port))
			if e := col.waitFor(*port, 10*time.Second); e == nil || e.Reason != "NO_SOCKET" || e.Hook != "" {
				t.Errorf("%s/%s accepted: got %+v, want a NO_SOCKET drop outside netfilter", tool, fam.Network, e)
			}
		}
	}
}

// TestNetfilterTwoTracers: the kernel refuses two BPF netfilter programs
// at one priority of a hook, so a second pktfate (or another tool holding
// the first priority) takes the next free one; both attribute the drop.
func TestNetfilterTwoTracers(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NetfilterLinksSupported(); err != nil {
		t.Skipf("kernel without BPF netfilter links: %v", err)
	}
	top := testutil.NewRouter(t)
	var cols [2]collector
	var srcs []*tracer.EBPF
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range cols {
		src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, FilterNetns: top.Router.Inode,
			Netfilter: true, NetfilterNetns: top.RouterPath, NetfilterMethod: tracer.NetfilterLinks})
		if err := src.Start(); err != nil {
			t.Fatalf("tracer %d: %v", i+1, err)
		}
		defer src.Close()
		srcs = append(srcs, src)
		go src.Run(ctx, fate.EventFunc(cols[i].handle))
	}
	const port = 19999
	if err := testutil.AddRule(ctx, top.Router, "nftables", "udp4", "LOCAL_IN", "DROP", port); err != nil {
		t.Fatal(err)
	}
	for _, src := range srcs {
		waitCovered(t, src, top.Router.Inode)
	}
	sendFrom(t, top.Client, "udp4", netip.AddrPortFrom(testutil.RouterFamilies[0].RouterIn, port))
	for i := range cols {
		if e := cols[i].waitFor(port, 10*time.Second); e == nil || e.Hook != "LOCAL_IN" || e.Family != "ipv4" {
			t.Errorf("tracer %d: %+v", i+1, e)
		}
	}
}

// TestNetfilterRescan: links in every namespace reach a namespace created
// while the source runs within a second or two, and not before its
// creation; closing the source stops the rescans.
func TestNetfilterRescan(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NetfilterLinksSupported(); err != nil {
		t.Skipf("kernel without BPF netfilter links: %v", err)
	}
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, Netfilter: true, NetfilterAllNetns: true, NetfilterMethod: tracer.NetfilterLinks})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, fate.EventFunc(func(*fate.Event) {})) }()
	start := tracer.MonoNow()
	ns, err := netns.New(fmt.Sprintf("pktfate-rescan-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	addChain(t, ns)
	if src.NetfilterCovers(ns.Inode, tracer.MonoNow()) {
		t.Error("a namespace made after Start is covered at once")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !src.NetfilterCovers(ns.Inode, tracer.MonoNow()) {
		if time.Now().After(deadline) {
			t.Fatal("the new namespace was not covered within 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if src.NetfilterCovers(ns.Inode, start) {
		t.Error("covered before its links were attached")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestNetfilterReleasesGoneNamespaces: the links of a namespace that went
// away are closed within a few rescans. The kernel's netfilter link holds
// a reference on its namespace, so until they are, the deleted namespace
// and its interfaces live on: here a veth whose other end is in the
// namespace stays in the test's own namespace until the links go.
func TestNetfilterReleasesGoneNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NetfilterLinksSupported(); err != nil {
		t.Skipf("kernel without BPF netfilter links: %v", err)
	}
	// The veth's near end lives in here, an anonymous namespace only a
	// descriptor holds: found at the start, it must stay covered.
	here := testutil.NewNS(t)
	addChain(t, here)
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, Netfilter: true, NetfilterAllNetns: true, NetfilterMethod: tracer.NetfilterLinks})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx, fate.EventFunc(func(*fate.Event) {}))
	ns, err := netns.New(fmt.Sprintf("pktfate-release-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			ns.Close()
		}
	}()
	if err := netns.Veth(here, "pfrel0", ns, "pfrel1"); err != nil {
		t.Fatal(err)
	}
	addChain(t, ns)
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait("the new namespace covered", func() bool { return src.NetfilterCovers(ns.Inode, tracer.MonoNow()) })
	ino := ns.Inode
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	wait("the gone namespace released", func() bool { return !src.NetfilterCovers(ino, tracer.MonoNow()) })
	// (Counting this process's link descriptors proves less: namespaces
	// other tests make meanwhile are attached too.) The namespace is freed
	// only once no link holds it: its veth goes with it.
	wait("the veth of the gone namespace removed", func() bool {
		_, err := here.Ifindex("pfrel0")
		return err != nil
	})
	if !src.NetfilterCovers(here.Inode, tracer.MonoNow()) {
		t.Error("a namespace held only by a descriptor was released (or never covered)")
	}
}

// startRouterLinks runs an ebpf source with netfilter links in the
// router's namespace, collecting its events, until the test ends.
func startRouterLinks(t *testing.T, top *testutil.Router) (*tracer.EBPF, *collector) {
	t.Helper()
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, FilterNetns: top.Router.Inode,
		Netfilter: true, NetfilterNetns: top.RouterPath, NetfilterMethod: tracer.NetfilterLinks})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // before Close: cleanups run last first
	go src.Run(ctx, fate.EventFunc(col.handle))
	return src, col
}

// TestNetfilterLinksOnlyWhereChains: links would switch netfilter on in a
// namespace that runs none, so they attach only where a chain is; a drop
// by a hook that no chain shows (here another BPF netfilter program)
// makes them attach at once, and the next drop there is attributed.
func TestNetfilterLinksOnlyWhereChains(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NetfilterLinksSupported(); err != nil {
		t.Skipf("kernel without BPF netfilter links: %v", err)
	}
	top := testutil.NewRouter(t)
	src, col := startRouterLinks(t, top)
	if src.NetfilterCovers(top.Router.Inode, tracer.MonoNow()) || src.NetfilterWaiting() != 1 {
		t.Fatalf("a namespace without chains: covered %v, %d waiting; want links only once a chain is there",
			src.NetfilterCovers(top.Router.Inode, tracer.MonoNow()), src.NetfilterWaiting())
	}

	// Another tool's BPF program drops everything entering LOCAL_IN.
	dropper, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Netfilter, AttachType: ebpf.AttachNetfilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, // NF_DROP
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dropper.Close()
	var l link.Link
	if err := top.Router.Do(func() error {
		var err error
		l, err = link.AttachNetfilter(link.NetfilterOptions{Program: dropper, ProtocolFamily: link.NetfilterProtoIPv4,
			Hook: link.NetfilterInetLocalIn, Priority: 0})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	in := testutil.RouterFamilies[0].RouterIn
	sendFrom(t, top.Client, "udp4", netip.AddrPortFrom(in, 20001))
	e := col.waitFor(20001, 10*time.Second)
	if e == nil || e.Reason != "NETFILTER_DROP" || e.Hook != "" {
		t.Fatalf("first drop by a hook no chain shows: %+v, want NETFILTER_DROP outside any bracketed chain", e)
	}
	waitCovered(t, src, top.Router.Inode)
	sendFrom(t, top.Client, "udp4", netip.AddrPortFrom(in, 20002))
	if e := col.waitFor(20002, 10*time.Second); e == nil || e.Hook != "LOCAL_IN" || e.Family != "ipv4" {
		t.Errorf("a drop after the links attached: %+v, want it in ipv4 LOCAL_IN", e)
	}
}

// TestNetfilterLinksFollowNewChains: a chain made during the capture in a
// namespace that had none is bracketed at once, from nftables' change
// notifications: with the look every second held off for an hour, the
// links attach anyway, and the chain's first drop is attributed.
func TestNetfilterLinksFollowNewChains(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NetfilterLinksSupported(); err != nil {
		t.Skipf("kernel without BPF netfilter links: %v", err)
	}
	defer tracer.SetNetfilterLookEvery(time.Hour)()
	top := testutil.NewRouter(t)
	src, col := startRouterLinks(t, top)
	if src.NetfilterCovers(top.Router.Inode, tracer.MonoNow()) {
		t.Fatal("covered before it had a chain")
	}
	const port = 20011
	if err := testutil.AddRule(t.Context(), top.Router, "nftables", "udp4", "LOCAL_IN", "DROP", port); err != nil {
		t.Fatal(err)
	}
	waitCovered(t, src, top.Router.Inode)
	sendFrom(t, top.Client, "udp4", netip.AddrPortFrom(testutil.RouterFamilies[0].RouterIn, port))
	if e := col.waitFor(port, 10*time.Second); e == nil || e.Hook != "LOCAL_IN" || e.Family != "ipv4" {
		t.Errorf("the new chain's drop: %+v, want it in ipv4 LOCAL_IN", e)
	}
}
