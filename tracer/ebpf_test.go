package tracer_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
	"golang.org/x/net/bpf"
)

// capture runs the ebpf source filtered to ns while send runs, and returns
// every event (cloned) and the source's losses. It stops the source once
// the namespace's kernel counter of UDP packets to closed ports (IPv4 and
// IPv6) has grown by noPorts: every such drop has passed the tracepoint
// by then, and the source's stop reads all it submitted.
func capture(t *testing.T, ns *netns.NS, cfg tracer.EBPFConfig, noPorts uint64, send func() error) ([]*fate.Event, []fate.Loss) {
	t.Helper()
	cfg.FilterNetns = ns.Inode
	src := tracer.NewEBPF(cfg)
	if err := src.CanRun(fate.Filters{Drops: true, Consumes: true}); err != nil {
		t.Fatalf("ebpf source cannot run: %v", err)
	}
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	base := udpNoPorts(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		events []*fate.Event
		runErr error
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = src.Run(ctx, fate.EventFunc(func(e *fate.Event) {
			mu.Lock()
			events = append(events, e.Clone())
			mu.Unlock()
		}))
	}()
	if err := send(); err != nil {
		cancel()
		wg.Wait()
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); udpNoPorts(t, ns) < base+noPorts; {
		if time.Now().After(deadline) {
			t.Errorf("the kernel counted %d of %d UDP packets to closed ports", udpNoPorts(t, ns)-base, noPorts)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
	return events, src.Losses()
}

// udpNoPorts reads the namespace's Udp NoPorts plus Udp6NoPorts
// (/proc/thread-self/net: the thread's namespace, not the process's).
func udpNoPorts(t *testing.T, ns *netns.NS) uint64 {
	t.Helper()
	var total uint64
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		// "Udp: InDatagrams NoPorts ..." then "Udp: 1 2 ...".
		var names []string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for j, n := range names {
				if n == "NoPorts" && j < len(f) {
					v, _ := strconv.ParseUint(f[j], 10, 64)
					total += v
				}
			}
		}
		b, err = os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Udp6NoPorts" {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				total += v
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func sendUDP(ns *netns.NS, network string, dst netip.AddrPort, n int) func() error {
	return func() error { return ns.SendUDP(network, dst, n, []byte("pktfate")) }
}

func assertNoLoss(t *testing.T, losses []fate.Loss) {
	t.Helper()
	for _, c := range losses {
		if c.Value != 0 {
			t.Errorf("lost events: %s=%d", c.Name, c.Value)
		}
	}
}

func TestEBPFClosedPortDrops(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name    string
		network string
		dst     netip.AddrPort
	}{
		{"ipv4", "udp4", netip.MustParseAddrPort("127.0.0.1:9")},
		{"ipv6", "udp6", netip.MustParseAddrPort("[::1]:9")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testutil.NewNS(t)
			const n = 25
			events, losses := capture(t, ns, tracer.EBPFConfig{Drops: true, Consumes: true}, n,
				sendUDP(ns, tc.network, tc.dst, n))
			assertNoLoss(t, losses)
			drops := 0
			for _, e := range events {
				if e.Fate != fate.FateDrop || e.Packet.Proto != "udp" {
					continue
				}
				drops++
				if e.Reason != "NO_SOCKET" {
					t.Errorf("drop reason = %q, want NO_SOCKET", e.Reason)
				}
				if e.Packet.Dst != tc.dst.Addr() || e.Packet.Dport != tc.dst.Port() {
					t.Errorf("drop of %v:%d, want %v", e.Packet.Dst, e.Packet.Dport, tc.dst)
				}
				if e.Packet.Src != tc.dst.Addr() || e.Packet.Sport == 0 {
					t.Errorf("drop from %v:%d, want %v:<ephemeral>", e.Packet.Src, e.Packet.Sport, tc.dst.Addr())
				}
				if e.Netns != ns.Inode || e.Ifname != "lo" {
					t.Errorf("drop in netns %d on %q, want %d on lo", e.Netns, e.Ifname, ns.Inode)
				}
				if fn := fate.Function(e.Location); fn == "" || fn[0] == '0' {
					t.Errorf("location %q is not symbolised", e.Location)
				}
				if e.Mono == 0 || time.Since(e.Time) > time.Minute || time.Until(e.Time) > time.Second {
					t.Errorf("event time %v is not now", e.Time)
				}
			}
			if drops != n {
				t.Errorf("got %d UDP drops, want exactly %d", drops, n)
			}
		})
	}
}

// TestEBPFDeliveredIsNotDropped sends to an open and to a closed port in the
// same capture: only the closed port's packets may be reported as drops.
// Consumes of delivered packets are not counted exactly: since 6.18 UDP (and
// since 5.19 TCP) frees received packets with skb_attempt_defer_free, which
// on the allocating CPU passes no tracepoint at all.
func TestEBPFDeliveredIsNotDropped(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	var srv *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	open := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	closed := netip.MustParseAddrPort("127.0.0.1:9")
	const n, m = 10, 3
	events, losses := capture(t, ns, tracer.EBPFConfig{Drops: true, Consumes: true}, m, func() error {
		if err := sendUDP(ns, "udp4", open, n)(); err != nil {
			return err
		}
		buf := make([]byte, 64)
		for i := 0; i < n; i++ {
			srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := srv.ReadFromUDPAddrPort(buf); err != nil {
				return fmt.Errorf("server received %d of %d packets: %w", i, n, err)
			}
		}
		return sendUDP(ns, "udp4", closed, m)()
	})
	assertNoLoss(t, losses)
	closedDrops := 0
	for _, e := range events {
		if e.Packet.Proto != "udp" || e.Fate != fate.FateDrop {
			continue
		}
		switch e.Packet.Dport {
		case open.Port():
			t.Errorf("delivered packet reported dropped: %s at %s", e.Reason, e.Location)
		case closed.Port():
			closedDrops++
		}
	}
	if closedDrops != m {
		t.Errorf("got %d drops to the closed port, want %d", closedDrops, m)
	}
}

func TestEBPFDropsOnlyAndMarkFilter(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	// A mark filter that matches nothing this namespace sends.
	events, losses := capture(t, ns, tracer.EBPFConfig{Drops: true, FilterMark: 0x42, FilterMarkMask: 0xff}, 5,
		sendUDP(ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 5))
	assertNoLoss(t, losses)
	if len(events) != 0 {
		t.Errorf("mark filter 0x42/0xff let %d events through, want 0 (first: %+v)", len(events), events[0])
	}
	events, _ = capture(t, ns, tracer.EBPFConfig{Drops: true}, 5,
		sendUDP(ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 5))
	drops := 0
	for _, e := range events {
		if e.Fate != fate.FateDrop {
			t.Errorf("drops-only capture delivered a %s event", e.Fate)
		}
		if e.Packet.Proto == "udp" {
			drops++
		}
	}
	if drops != 5 {
		t.Errorf("got %d UDP drops, want 5", drops)
	}
}

// TestStopReadsEverySubmitted stops the source in the middle of a flood:
// every record the programs submitted is delivered (the stop detaches
// them first, then reads the ring to its end), and unread_at_stop says 0.
func TestStopReadsEverySubmitted(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var delivered atomic.Uint64
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, fate.EventFunc(func(*fate.Event) { delivered.Add(1) }))
	}()
	flood, stopFlood := context.WithCancel(context.Background())
	var senders sync.WaitGroup
	for range 2 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for flood.Err() == nil {
				if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 50, []byte("flood")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Stop once the flood is under way, while it goes on (a slow guest
	// under the race detector sends a few hundred a second).
	for deadline := time.Now().Add(time.Minute); delivered.Load() < 200 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err := <-done
	stopFlood()
	senders.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if delivered.Load() < 200 {
		t.Fatalf("only %d events in a minute of flood", delivered.Load())
	}
	submitted, err := src.Submitted()
	if err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != submitted {
		t.Errorf("delivered %d of the %d records submitted", got, submitted)
	}
	for _, l := range src.Losses() {
		if l.Name == "unread_at_stop" && (l.Value != 0 || l.Unknown != "") {
			t.Errorf("unread_at_stop %+v", l)
		}
	}
	t.Logf("%d records submitted and delivered", submitted)
}

// TestKernelPcapFilter: the trailing expression runs in the programs, so
// packets it does not match never reach the ring; an expression the
// translation cannot run is left to user space, and the source says so.
func TestKernelPcapFilter(t *testing.T) {
	testutil.RequireRoot(t)
	f, err := pcapfilter.Compile("udp dst port 9999")
	if err != nil {
		t.Fatal(err)
	}
	ns := testutil.NewNS(t)
	events, losses := capture(t, ns, tracer.EBPFConfig{Drops: true, Consumes: true, PcapFilter: f.Program()}, 10, func() error {
		if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 5, []byte("other")); err != nil {
			return err
		}
		return ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9999"), 5, []byte("wanted"))
	})
	assertNoLoss(t, losses)
	if len(events) != 5 {
		t.Errorf("%d events, want the 5 to port 9999 alone", len(events))
	}
	for _, e := range events {
		if e.Packet.Dport != 9999 || !e.KernelFiltered {
			t.Errorf("event to port %d, kernel-filtered %v", e.Packet.Dport, e.KernelFiltered)
		}
	}
	// Longer than the translation takes (4096 classic instructions): user
	// space runs it.
	var long []bpf.Instruction
	for range 5000 {
		long = append(long, bpf.LoadConstant{Dst: bpf.RegA, Val: 0})
	}
	raw, err := bpf.Assemble(append(long, bpf.RetConstant{Val: 65535}))
	if err != nil {
		t.Fatal(err)
	}
	src := tracer.NewEBPF(tracer.EBPFConfig{Drops: true, PcapFilter: raw})
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.KernelFilter == "" || !strings.Contains(src.KernelFilter, "user space") {
		t.Errorf("a 5001-instruction filter: KernelFilter %q, want why it runs in user space", src.KernelFilter)
	}
}
