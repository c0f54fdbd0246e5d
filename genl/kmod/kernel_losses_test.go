package kmod

// Every place the module can lose, refuse or give up a report, driven
// above zero and read back; and packets stolen by a hook, which are no
// loss.

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/testutil"
)

// flood sends UDP from the client through the router to the server until
// stopped: to a port the router drops in FORWARD, and to an open port.
type flood struct {
	stop chan struct{}
	wg   sync.WaitGroup
	sent atomic.Uint64
}

func startFlood(t *testing.T, top *testutil.Router, dropPort uint16) *flood {
	t.Helper()
	f := families[0]
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", dropPort); err != nil {
		t.Fatal(err)
	}
	open, _ := sink(t, top.Server, f.Network)
	conn := udpSocket(t, top.Client, f.Network)
	fl := &flood{stop: make(chan struct{})}
	fl.wg.Add(1)
	go func() {
		defer fl.wg.Done()
		payload := make([]byte, 64)
		for i := 0; ; i++ {
			select {
			case <-fl.stop:
				return
			default:
			}
			port := dropPort
			if i%2 == 1 {
				port = open
			}
			if _, err := conn.WriteToUDPAddrPort(payload, netip.AddrPortFrom(f.Server, port)); err == nil {
				fl.sent.Add(1)
			}
		}
	}()
	t.Cleanup(fl.halt)
	return fl
}

func (fl *flood) halt() {
	select {
	case <-fl.stop:
	default:
		close(fl.stop)
	}
	fl.wg.Wait()
}

// TestKernelRateLimit: over the rate limit, drops are counted as rate
// limited instead of reported, and what is reported arrives.
func TestKernelRateLimit(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	// One token a second per CPU, five in the bucket.
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, &EnableConfig{Rate: 1, Burst: 5})
	f := families[0]
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", 31500); err != nil {
		t.Fatal(err)
	}
	conn := udpSocket(t, top.Client, f.Network)
	const n = 200
	start := time.Now()
	sendN(t, conn, netip.AddrPortFrom(f.Server, 31500), n, 12)
	elapsed := time.Since(start)
	var st Stats
	waitFor(5*time.Second, func() bool {
		st = sessionStats(t, s)
		return st.Seen >= n*9/10 && dc.count(toPort(31500)) == int(st.Reported)
	})
	got := dc.count(toPort(31500))
	t.Logf("%d drops in %s: %+v, %d events read", n, elapsed, st.Counters, got)
	// Each CPU may report its burst plus a token a second.
	limit := uint64(2 * (5 + int(elapsed.Seconds()) + 1))
	// (A few of the first packets may wait for ARP and overflow its queue.)
	if st.Seen < n*9/10 || st.Reported > limit || st.Reported+st.RateLimited != st.Seen || st.RateLimited == 0 {
		t.Errorf("stats %+v: want %d seen, at most %d reported, the rest rate limited", st.Counters, n, limit)
	}
	if st.Seen != st.Reported+st.Lost() {
		t.Errorf("stats %+v: seen is not reported + lost", st.Counters)
	}
	if uint64(got) != st.Reported {
		t.Errorf("%d events read, %d reported", got, st.Reported)
	}
}

// TestKernelQueueFull: with a per-CPU queue of 2 and a burst of drops, the
// overflow is counted, and every seen drop is either reported or counted.
// The burst comes from a SCHED_FIFO thread: the work item that drains the
// queue runs on the same CPU and cannot preempt it, so the queue must
// overflow (from an ordinary thread, a slow guest under the race detector
// let the work item drain it after every drop).
func TestKernelQueueFull(t *testing.T) {
	loadModule(t, "queue_len=2")
	c := dial(t)
	top := testutil.NewRouter(t)
	s, _ := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	f := families[0]
	const dropPort = 31600
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", dropPort); err != nil {
		t.Fatal(err)
	}
	conn := udpSocket(t, top.Client, f.Network)
	if err := testutil.BurstFIFO(conn, netip.AddrPortFrom(f.Server, dropPort), 500, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	var st Stats
	// The work item drains the queues.
	waitFor(5*time.Second, func() bool {
		st = sessionStats(t, s)
		return st.Seen == st.Reported+st.Lost()
	})
	t.Logf("500 drops: %+v", st.Counters)
	if st.Module.QueueLen != 2 || st.QueueFull == 0 || st.Reported == 0 || st.Seen != st.Reported+st.Lost() {
		t.Errorf("stats %+v: want queue overflows counted and seen = reported + lost", st.Counters)
	}
}

// TestKernelSendFailed: a session whose socket nobody reads fills its
// receive buffer; the module counts the events it could not send, and the
// reader sees the overrun.
func TestKernelSendFailed(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	s, err := c.NewSession(SessionConfig{Filter: Filter{Netns: top.Router.Inode}, ReadBuffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Enable(EnableConfig{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	f := families[0]
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", 31650); err != nil {
		t.Fatal(err)
	}
	sendN(t, udpSocket(t, top.Client, f.Network), netip.AddrPortFrom(f.Server, 31650), 100, 12)
	var st Stats
	if !waitFor(5*time.Second, func() bool {
		st = sessionStats(t, s)
		return st.SendFailed > 0 && st.Seen == st.Reported+st.Lost()
	}) {
		t.Fatalf("no send failure counted with a full socket: %+v", st.Counters)
	}
	// Read what fits: the socket reports the overrun first or after.
	_ = s.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var d Drop
	n := 0
	for s.Read(&d) == nil {
		n++
	}
	t.Logf("%+v; %d events read, %d overruns", st.Counters, n, s.Overruns())
	if s.Overruns() == 0 || uint64(n) > st.Reported {
		t.Errorf("%d overruns, %d events read of %d reported", s.Overruns(), n, st.Reported)
	}
}

// TestKernelQueue: NFQUEUE. A packet dropped by its queue's verdict is
// reported as dropped by the queue of its hook; one accepted goes on and
// passes the chain's end. With a small table, held packets fill it (table
// full), go stale (expired: information), and a verdict on them then
// drops what the module can no longer attribute (stale dropped: a loss).
func TestKernelQueue(t *testing.T) {
	t.Run("verdicts", func(t *testing.T) {
		c := kernelClient(t)
		top := testutil.NewRouter(t)
		nft(t, top.Router, "table inet q {\n chain through { type filter hook forward priority 0; udp dport 31700 queue num 7; }\n}\n")
		q := openNFQueue(t, top.Router, 7)
		s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
		f := families[0]
		open, received := sink(t, top.Server, f.Network)
		nft(t, top.Router, fmt.Sprintf("table inet q2 {\n chain through { type filter hook forward priority 0; udp dport %d queue num 7; }\n}\n", open))
		conn := udpSocket(t, top.Client, f.Network)

		send(t, conn, netip.AddrPortFrom(f.Server, 31700))
		ids := q.held(1, 5*time.Second)
		if len(ids) != 1 {
			t.Fatalf("queue holds %d packets, want 1", len(ids))
		}
		if err := q.verdict(ids[0], nfDrop, false); err != nil {
			t.Fatal(err)
		}
		d, _ := dc.find(5*time.Second, toPort(31700))
		if d == nil || d.Where != WhereQueue || HookName(d.Family, d.Hook) != "FORWARD" || d.Netns != top.Router.Inode {
			t.Fatalf("packet dropped by its queue's verdict: %+v (%+v)", d, sessionStats(t, s))
		}
		before := sessionStats(t, s)
		send(t, conn, netip.AddrPortFrom(f.Server, open))
		ids = q.held(2, 5*time.Second)
		if len(ids) != 2 {
			t.Fatalf("queue holds %d packets, want 2", len(ids))
		}
		if err := q.verdict(ids[1], nfAccept, false); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool { return received() == 1 }) {
			t.Fatal("the accepted packet did not arrive")
		}
		after := sessionStats(t, s)
		if after.Stolen != before.Stolen || after.Seen != before.Seen || after.Unattributed() != 0 || after.Lost() != 0 {
			t.Errorf("accepted from the queue: %+v -> %+v, want it to pass the chain's end, nothing counted", before.Counters, after.Counters)
		}
	})
	t.Run("held", func(t *testing.T) {
		// 64 slots; entries stale after 300 ms.
		loadModule(t, "table_bits=6 stale_ms=300")
		c := dial(t)
		top := testutil.NewRouter(t)
		nft(t, top.Router, "table inet q {\n chain through { type filter hook forward priority 0; udp dport 31701 queue num 8; }\n}\n")
		q := openNFQueue(t, top.Router, 8)
		s, _ := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
		f := families[0]
		const n = 300
		sendN(t, udpSocket(t, top.Client, f.Network), netip.AddrPortFrom(f.Server, 31701), n, 12)
		ids := q.held(n, 10*time.Second)
		st := sessionStats(t, s)
		t.Logf("%d held: %+v, table %d/%d", len(ids), st.Counters, st.Module.TableUsed, st.Module.TableSize)
		if len(ids) < n*9/10 || st.TableFull == 0 || st.Module.TableFull == 0 || st.Module.TableSize != 64 {
			t.Errorf("%d packets held in a queue: %+v, want the table full", len(ids), st.Counters)
		}
		if !waitFor(5*time.Second, func() bool { st = sessionStats(t, s); return st.StaleExpired > 0 && st.Module.TableUsed == 0 }) {
			t.Errorf("held packets' entries did not expire: %+v, table used %d", st.Counters, st.Module.TableUsed)
		}
		if st.StaleDropped != 0 || st.Seen != 0 {
			t.Errorf("expiry alone: %+v, want no drop seen or lost yet", st.Counters)
		}
		if err := q.verdict(ids[len(ids)-1], nfDrop, true); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool { st = sessionStats(t, s); return st.StaleDropped >= uint64(len(ids))*9/10 }) {
			t.Errorf("verdict on expired packets: %+v, want them counted as stale dropped", st.Counters)
		}
		t.Logf("after the verdict: %+v, unattributed %d", st.Counters, st.Unattributed())
	})
}

// TestKernelDefragStolen: with conntrack in the router, fragments are
// queued by its defragmentation hook (stolen, NF_STOLEN), and reassembled
// datagrams go on. Stolen fragments are counted as stolen, never as lost,
// and do not fill even a small table; a fragmented datagram dropped in the
// forward chain is reported once, its fragments never.
func TestKernelDefragStolen(t *testing.T) {
	loadModule(t, "table_bits=6")
	c := dial(t)
	top := testutil.NewRouter(t)
	f := families[0]
	open, received := sink(t, top.Server, f.Network)
	nft(t, top.Router, "table inet conntrack {\n chain through { type filter hook forward priority 0; udp dport 31800 drop; ct state new,established accept; }\n}\n")
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	conn := udpSocket(t, top.Client, f.Network)
	// 3000 bytes: three fragments on a 1500-byte link.
	const n, dropped = 300, 20
	// In batches the sink keeps up with (its socket buffer is no test).
	for i := 0; i < n; i += 10 {
		sendN(t, conn, netip.AddrPortFrom(f.Server, open), 10, 3000)
		waitFor(2*time.Second, func() bool { return received() >= i+10 })
	}
	if !waitFor(10*time.Second, func() bool { return received() >= n*9/10 }) {
		t.Fatalf("%d of %d fragmented datagrams arrived", received(), n)
	}
	sendN(t, conn, netip.AddrPortFrom(f.Server, 31800), dropped, 3000)
	var st Stats
	waitFor(5*time.Second, func() bool {
		st = sessionStats(t, s)
		return dc.count(toPort(31800)) == dropped && st.Module.TableUsed == 0
	})
	t.Logf("%d delivered: %+v, table used %d", received(), st.Counters, st.Module.TableUsed)
	if st.Stolen < uint64(received()) || st.TableFull != 0 || st.Lost() != 0 || st.Unattributed() != 0 {
		t.Errorf("fragments: %+v, want at least one stolen per datagram, nothing lost or untracked", st.Counters)
	}
	if got := dc.count(toPort(31800)); got != dropped {
		t.Errorf("%d drop events for %d dropped datagrams", got, dropped)
	}
	if all := dc.count(func(*Drop) bool { return true }); all != dropped {
		t.Errorf("%d events in all, want only the %d dropped datagrams", all, dropped)
	}
	if d, _ := dc.find(0, toPort(31800)); d != nil && (HookName(d.Family, d.Hook) != "FORWARD" || d.Where != WhereChain || d.Len < 3000) {
		t.Errorf("dropped datagram: %+v", d)
	}
}
