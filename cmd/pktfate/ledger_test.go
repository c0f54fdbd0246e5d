package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/dropmon"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
)

// The loss ledger end to end: each counter is driven above zero with real
// sources, through the CLI, and what the user is shown is checked, not the
// library's counters: the summary line (text and JSON), its complete flag,
// and that every packet sent is either reported or counted.

// lostValue returns the named loss counter of an NDJSON summary.
func lostValue(t *testing.T, summary ndjsonLine, observer, name string) float64 {
	t.Helper()
	lost, _ := summary["lost"].([]any)
	for _, l := range lost {
		m := l.(map[string]any)
		if m["observer"] == observer && m["name"] == name {
			if m["unknown"] != nil {
				t.Fatalf("%s_%s unknown: %v", observer, name, m["unknown"])
			}
			return m["value"].(float64)
		}
	}
	t.Fatalf("summary has no %s_%s counter: %v", observer, name, summary["lost"])
	return 0
}

// lostSum adds up an observer's loss counters.
func lostSum(summary ndjsonLine, observer string) float64 {
	var sum float64
	lost, _ := summary["lost"].([]any)
	for _, l := range lost {
		if m := l.(map[string]any); m["observer"] == observer {
			v, _ := m["value"].(float64)
			sum += v
		}
	}
	return sum
}

// countDrops counts the drop events (or fates) with the reason.
func countDrops(lines []ndjsonLine, reason string) int {
	n := 0
	for _, l := range lines {
		if l["fate"] == "drop" && l["reason"] == reason {
			n++
		}
	}
	return n
}

// TestLedgerRingFull: with a one-page ring and the reader stopped
// (SIGSTOP), the BPF programs find the ring full. Every packet sent is
// then either an event or counted in ebpf_ringbuf_full, the summary is not
// complete, and the text summary names the counter with its value.
func TestLedgerRingFull(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 300
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			ns := testutil.NewNS(t)
			args := []string{"--source", "ebpf", "--filter-fate", "drop", "-B", "4", "--filter-netns", fmt.Sprint(ns.Inode)}
			if format == "json" {
				args = append(args, "--output-json")
			}
			r := startTrace(t, append(args, "udp")...)
			if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// A process stopped keeps its BPF programs running: the ring
			// fills, nothing reads it.
			sendUDP(t, ns, "udp4", dst, n)
			if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			r.stop(t, os.Interrupt)
			if format == "text" {
				out := r.stdout.String()
				for _, want := range []string{"lost events:", "ebpf_ringbuf_full"} {
					if !strings.Contains(out, want) {
						t.Errorf("text output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, "nothing lost") || strings.Contains(out, "ebpf_ringbuf_full=0") {
					t.Errorf("text summary claims nothing was lost:\n%s", out)
				}
				return
			}
			events, summary := parseNDJSON(t, r.stdout.Bytes())
			checkBalance(t, summary, countDrops(events, "NO_SOCKET"), fate.ObserverEBPF, "ringbuf_full", n)
		})
	}
}

// TestLedgerKmodRateLimited: the module's token bucket (--kmod-rate 1,
// its burst of 1000) refuses most of a burst of netfilter drops; every
// drop is either reported or counted in the module's counters.
func TestLedgerKmodRateLimited(t *testing.T) {
	testutil.LoadModule(t) // skips on the host: it cannot load modules
	ns := testutil.NewNS(t)
	const port, n = 47140, 1500
	if err := testutil.AddRule(t.Context(), ns, "nftables", "udp4", "LOCAL_IN", "DROP", port); err != nil {
		t.Fatal(err)
	}
	r := startTrace(t, "--output-json", "--source", "kmod", "--kmod-rate", "1", "--filter-netns", fmt.Sprint(ns.Inode),
		fmt.Sprintf("udp port %d", port))
	sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), n)
	r.stop(t, os.Interrupt)
	events, summary := parseNDJSON(t, r.stdout.Bytes())
	checkBalance(t, summary, countDrops(events, "NETFILTER_DROP"), fate.ObserverKmod, "rate_limited", n)
}

// checkBalance: the named counter was driven above 0, some packets were
// still reported, every packet sent is either reported or in one of the
// observer's loss counters, and the summary does not claim completeness.
func checkBalance(t *testing.T, summary ndjsonLine, reported int, observer, name string, sent int) {
	t.Helper()
	v, all := lostValue(t, summary, observer, name), lostSum(summary, observer)
	t.Logf("%d reported, %s_%s %v, all %s losses %v", reported, observer, name, v, observer, all)
	if v == 0 || reported == 0 {
		t.Errorf("%d reported and %s_%s %v: want both above 0", reported, observer, name, v)
	}
	if float64(reported)+all != float64(sent) {
		t.Errorf("%d reported + %v counted = %v, want the %d packets sent", reported, all, float64(reported)+all, sent)
	}
	if summary["complete"] != false {
		t.Errorf("summary complete = %v with %s_%s %v", summary["complete"], observer, name, v)
	}
}

// TestLedgerDropmonQueue: with a NET_DM alert queue of one per CPU, a burst
// of drops overflows it (or, where the kernel counts no overflow, the
// socket). Whatever drop_monitor did not deliver is accounted for: every
// fate that ebpf saw and dropmon did not is "lost" for dropmon, never
// "missed", and then a dropmon loss counter is above 0 and the summary is
// not complete.
func TestLedgerDropmonQueue(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NewDropmon(tracer.DropmonConfig{}).CanRun(fate.Filters{Drops: true}); err != nil {
		t.Skipf("kernel without drop_monitor (NET_DM): %v", err)
	}
	before := dropmonConfig(t)
	ns := testutil.NewNS(t)
	const port, n = 47142, 2000
	r := startTrace(t, "--output-json", "--source", "ebpf,dropmon", "--filter-fate", "drop", "--dropmon-queue", "1",
		"--correlate-window", "2s", fmt.Sprintf("udp port %d", port))
	sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), n)
	r.stop(t, os.Interrupt)
	// NET_DM keeps its configuration when stopped: the queue of one must
	// not outlive the capture (the next one would lose alerts).
	if after := dropmonConfig(t); after != before {
		t.Errorf("drop_monitor's configuration after the capture %+v, before %+v", after, before)
	}
	fates, summary := parseFates(t, r.stdout.Bytes())
	status := map[string]int{}
	for _, f := range fates {
		if f["reason"] != "NO_SOCKET" {
			continue
		}
		obs := f["observers"].(map[string]any)
		if obs["ebpf"].(map[string]any)["status"] != "saw" {
			t.Errorf("ebpf did not see a drop: %v", f)
		}
		status[fmt.Sprint(obs["dropmon"].(map[string]any)["status"])]++
	}
	losses := lostSum(summary, fate.ObserverDropmon)
	t.Logf("dropmon per fate %v, dropmon losses %v, lost_by_observer %v", status, losses, summary["lost_by_observer"])
	if total := status["saw"] + status["lost"] + status["missed"]; total != n {
		t.Errorf("%d fates of the drops, want %d", total, n)
	}
	if status["missed"] != 0 {
		t.Errorf("%d drops dropmon missed without a loss counted: they must be lost (%v)", status["missed"], status)
	}
	if status["lost"] > 0 && (losses == 0 || summary["complete"] != false) {
		t.Errorf("%d drops lost by dropmon, yet its losses %v and complete %v", status["lost"], losses, summary["complete"])
	}
	// Counted exactly: what dropmon delivered plus what its counters say
	// it lost is what was sent. An overrun of pktfate's socket is counted
	// once per ENOBUFS, not per alert: the alerts lost there are the
	// estimate from ebpf's sightings (lost_by_observer).
	if overrun := lostValue(t, summary, fate.ObserverDropmon, "socket_overrun"); overrun == 0 {
		if float64(status["saw"])+losses != n {
			t.Errorf("dropmon delivered %d and counted %v lost: %v, want the %d sent", status["saw"], losses, float64(status["saw"])+losses, n)
		}
	} else {
		by, _ := summary["lost_by_observer"].(map[string]any)
		if est, _ := by[fate.ObserverDropmon].(float64); status["saw"]+int(est) != n {
			t.Errorf("dropmon delivered %d, estimated lost %v after %v overruns: want the %d sent", status["saw"], est, overrun, n)
		}
	}
	if status["saw"] == n && losses == 0 {
		t.Logf("this kernel's drop_monitor kept up with a queue of one")
	}
}

// dropmonConfig reads NET_DM's configuration.
func dropmonConfig(t *testing.T) dropmon.Config {
	t.Helper()
	c, err := dropmon.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, err := c.Config()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestLedgerNFInflightFull: a REJECT in LOCAL_IN sends its ICMP error
// through LOCAL_OUT from inside the LOCAL_IN chain, one chain nested in
// another. With the in-flight stack held to one chain (the test knob
// PKTFATE_TEST_NF_DEPTH; eight deep takes tunnels in tunnels), every
// nested chain overflows it: nf_inflight_full counts each, the summary is
// not complete and the text names the counter, while the rejected
// datagrams are still attributed to LOCAL_IN.
func TestLedgerNFInflightFull(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := tracer.NetfilterMethodAvailable(); err != nil {
		t.Skipf("no netfilter attribution on this kernel: %v", err)
	}
	t.Setenv("PKTFATE_TEST_NF_DEPTH", "1")
	const port, n = 47150, 50
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			ns := testutil.NewNS(t)
			rules := fmt.Sprintf("table inet pktfate_nest {\n"+
				"chain in { type filter hook input priority 0; udp dport %d reject; }\n"+
				"chain out { type filter hook output priority 0; }\n}\n", port)
			if out, err := ns.Exec(t.Context(), rules, "nft", "-f", "-"); err != nil {
				t.Fatalf("nft: %v: %s", err, out)
			}
			args := []string{"--source", "ebpf,nf", "--filter-fate", "drop", "--filter-netns", fmt.Sprint(ns.Inode)}
			if format == "json" {
				args = append(args, "--output-json")
			}
			r := startTrace(t, append(args, fmt.Sprintf("udp port %d", port))...)
			sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), n)
			r.stop(t, os.Interrupt)
			if format == "text" {
				out := r.stdout.String()
				for _, want := range []string{"lost events:", "nf_inflight_full"} {
					if !strings.Contains(out, want) {
						t.Errorf("text output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, "nothing lost") {
					t.Errorf("text summary claims nothing was lost:\n%s", out)
				}
				return
			}
			events, summary := parseNDJSON(t, r.stdout.Bytes())
			full := lostValue(t, summary, fate.ObserverNF, "inflight_full")
			inHook := 0
			for _, e := range events {
				if e["reason"] == "NETFILTER_DROP" && e["hook"] == "LOCAL_IN" {
					inHook++
				}
			}
			t.Logf("%d drops attributed to LOCAL_IN, nf_inflight_full %v", inHook, full)
			if full < n || inHook != n {
				t.Errorf("%d of %d rejected datagrams attributed to LOCAL_IN, nf_inflight_full %v: want all, and one overflow each", inHook, n, full)
			}
			if summary["complete"] != false {
				t.Errorf("summary complete = %v with nf_inflight_full %v", summary["complete"], full)
			}
		})
	}
}

// TestLedgerKmodQueueFull: with the module's per-CPU queue at 2 entries,
// a burst of netfilter drops from a SCHED_FIFO thread (the work item that
// drains the queue runs on the same CPU and cannot preempt it) overflows
// it well within the rate limit's burst; every drop is either reported or
// counted, and kmod_queue_full is among the counts the user is shown.
func TestLedgerKmodQueueFull(t *testing.T) {
	testutil.LoadModuleWith(t, "queue_len=2") // skips on the host: it cannot load modules
	ns := testutil.NewNS(t)
	const port, n = 47160, 500
	if err := testutil.AddRule(t.Context(), ns, "nftables", "udp4", "LOCAL_IN", "DROP", port); err != nil {
		t.Fatal(err)
	}
	r := startTrace(t, "--output-json", "--source", "kmod", "--filter-netns", fmt.Sprint(ns.Inode), fmt.Sprintf("udp port %d", port))
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := testutil.BurstFIFO(conn, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), n, []byte("pktfate queue")); err != nil {
		t.Fatal(err)
	}
	r.stop(t, os.Interrupt)
	events, summary := parseNDJSON(t, r.stdout.Bytes())
	checkBalance(t, summary, countDrops(events, "NETFILTER_DROP"), fate.ObserverKmod, "queue_full", n)
}

// TestLedgerDropmonOverrun: with the reader stopped (SIGSTOP) and NET_DM's
// queue longer than the burst, its alerts fill pktfate's 8 MiB socket buffer and the kernel drops the rest
// there: an ENOBUFS the reader sees when it runs again. It is counted
// (dropmon_socket_overrun), it opens a loss interval, so every drop ebpf
// saw and dropmon did not is "lost" for dropmon, never "missed", and what
// dropmon delivered plus that estimate is what was sent.
func TestLedgerDropmonOverrun(t *testing.T) {
	testutil.RequireRoot(t)
	if err := tracer.NewDropmon(tracer.DropmonConfig{}).CanRun(fate.Filters{Drops: true}); err != nil {
		t.Skipf("kernel without drop_monitor (NET_DM): %v", err)
	}
	ns := testutil.NewNS(t)
	const port, n = 47170, 20000
	// A queue longer than the burst: the alerts overflow the socket, not
	// NET_DM's queue (8 MiB holds 11,000 to 16,000 of them). A window
	// longer than the stop (sending takes 8 s in a TCG guest): after a
	// jump of its clock the correlator holds records one to two seconds
	// for the backlog, and for a source behind by at most 5 s (MaxLag);
	// reading 30,000 sightings in a TCG guest can take longer, and records
	// would go out before their dropmon alert was read (each then counted
	// late, and dropmon "missed" in them: TestCorrelateStalledProcess
	// proves the hold itself).
	r := startTrace(t, "--output-json", "--source", "ebpf,dropmon", "--filter-fate", "drop", "--dropmon-queue", "50000",
		"--correlate-window", "30s", fmt.Sprintf("udp port %d", port))
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), n)
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	r.stop(t, os.Interrupt)
	fates, summary := parseFates(t, r.stdout.Bytes())
	// Should the stop outlast the window after all, the records split
	// must be counted late. The balance is over the packets ebpf saw.
	status := map[string]int{}
	split := 0
	for _, f := range fates {
		if f["reason"] != "NO_SOCKET" {
			continue
		}
		obs := f["observers"].(map[string]any)
		if obs["ebpf"].(map[string]any)["status"] != "saw" {
			split++
			continue
		}
		status[fmt.Sprint(obs["dropmon"].(map[string]any)["status"])]++
	}
	late, _ := summary["late"].(float64)
	if float64(split) > late {
		t.Errorf("%d records ebpf did not see, %v counted late", split, late)
	}
	overrun := lostValue(t, summary, fate.ObserverDropmon, "socket_overrun")
	by, _ := summary["lost_by_observer"].(map[string]any)
	est, _ := by[fate.ObserverDropmon].(float64)
	t.Logf("dropmon per fate %v, %d split (late %v), socket_overrun %v, estimated lost %v", status, split, late, overrun, est)
	if overrun == 0 {
		t.Fatalf("no overrun of a stopped reader's socket after %d alerts (%v)", n, status)
	}
	if status["missed"] != 0 || status["saw"]+status["lost"] != n || status["saw"]+int(est) != n {
		t.Errorf("dropmon delivered %d, lost %d (estimated %v), missed %d: want delivered + lost = the %d sent, none missed",
			status["saw"], status["lost"], est, status["missed"], n)
	}
	if summary["complete"] != false {
		t.Errorf("summary complete = %v after %v overruns", summary["complete"], overrun)
	}
}
