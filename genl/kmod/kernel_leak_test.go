package kmod

// The module's own memory and lifetime: load cycles under traffic with two
// sessions (one of a process killed with SIGKILL), its allocation counters
// and the kernel's meminfo, unload with sessions open, and its cost.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// holdStaticKeys keeps the kernel text that the module's (un)registration
// would patch unchanged for the rest of the test. The kfree_skb and
// consume_skb tracepoints get two probes of their own each (their tracefs
// event and a BPF raw tracepoint program), so that adding and removing the
// module's probe leaves both their static keys and their static calls
// (which point at the only probe while there is one) as they are;
// netfilter's per-hook keys (nf_hooks_needed) and the ingress and egress
// keys get nftables base chains in ns on every hook the module joins
// (inet, arp, bridge, and netdev ingress and egress on a device of ns).
// Reason: under QEMU's multi-threaded TCG, live text patching
// (text_poke_bp) of those sites while the other vCPU executes them oopsed
// with "int3" in sk_skb_reason_drop on 6.12, in kernel code the module does
// not touch; with the text held, loading and unloading only swaps
// RCU-protected arrays, which is what these tests are about.
func holdStaticKeys(t *testing.T, ns *netns.NS) {
	t.Helper()
	tracefs := "/sys/kernel/tracing"
	if _, err := os.Stat(tracefs + "/events"); err != nil {
		if err := unix.Mount("nodev", tracefs, "tracefs", 0, ""); err != nil {
			t.Fatalf("mounting tracefs: %v", err)
		}
	}
	for _, tp := range []string{"kfree_skb", "consume_skb"} {
		ev := tracefs + "/events/skb/" + tp + "/enable"
		if err := os.WriteFile(ev, []byte("1"), 0); err != nil {
			t.Fatalf("enabling the %s trace event: %v", tp, err)
		}
		t.Cleanup(func() { _ = os.WriteFile(ev, []byte("0"), 0) })
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.RawTracepoint,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			t.Fatalf("loading a no-op raw tracepoint program: %v", err)
		}
		t.Cleanup(func() { prog.Close() })
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
		if err != nil {
			t.Fatalf("attaching a no-op program to %s: %v", tp, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	if err := netns.Veth(ns, "k0", ns, "k1"); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	chains := func(family string, hooks ...string) {
		fmt.Fprintf(&b, "table %s pktfate_kmod_keys {\n", family)
		for _, h := range hooks {
			dev := ""
			if h == "ingress" || h == "egress" {
				dev = " device k0"
			}
			fmt.Fprintf(&b, " chain %s { type filter hook %s%s priority 0; policy accept; }\n", h, h, dev)
		}
		b.WriteString("}\n")
	}
	chains("inet", "prerouting", "input", "forward", "output", "postrouting")
	chains("arp", "input", "output")
	chains("bridge", "prerouting", "input", "forward", "output", "postrouting")
	chains("netdev", "ingress", "egress")
	nft(t, ns, b.String())
}

// Taint bits allowed after loading an out-of-tree, unsigned module:
// TAINT_OOT_MODULE (O, 12) and TAINT_UNSIGNED_MODULE (E, 13).
const allowedTaint = 1<<12 | 1<<13

func readTaint(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/tainted")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// meminfo returns a /proc/meminfo field in KiB.
func meminfo(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, rest, ok := strings.Cut(l, ":"); ok && name == field {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	t.Fatalf("no %s in /proc/meminfo", field)
	return 0
}

// kernelLog returns the kernel log lines (dmesg) from the ring buffer.
func kernelLog(t *testing.T) []string {
	t.Helper()
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, b)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b[:n]), "\n")
}

// checkMemoryBack: with no session left, the module holds what it held
// fresh from insmod, and every message it allocated is released.
func checkMemoryBack(t *testing.T, i int, fresh, now ModuleStats, ignore ...MemKind) {
	t.Helper()
	for k := MemKind(1); k < memKinds; k++ {
		if slices.Contains(ignore, k) {
			continue
		}
		fb, fo := fresh.Memory[k].InUse()
		nb, no := now.Memory[k].InUse()
		if nb != fb || no != fo {
			t.Errorf("cycle %d: %s memory in use %d bytes, %d objects; fresh module %d bytes, %d objects", i, k, nb, no, fb, fo)
		}
	}
	for _, k := range []MemKind{MemRing, MemSession, MemFilter, MemMessage} {
		if b, o := now.Memory[k].InUse(); b != 0 || o != 0 {
			t.Errorf("cycle %d: %s memory in use without sessions: %d bytes, %d objects", i, k, b, o)
		}
	}
}

// TestKernelLoadCycles loads the module 50 times under a UDP flood whose
// half the router drops, each time with two enabled sessions reading, and
// every tenth time a third in a process killed with SIGKILL. Even cycles
// close the sessions' sockets (no DISABLE) and check the module's own
// memory counters are back to a fresh module's before unloading; odd ones
// unload with the sessions open. Then: no oops, no warning, taint only
// from an out-of-tree unsigned module, and no growth of Slab, Percpu or
// VmallocUsed over the cycles (and no kmemleak report where the kernel
// has kmemleak).
func TestKernelLoadCycles(t *testing.T) {
	path := testutil.ModulePath(t)
	if taint := readTaint(t); taint&^allowedTaint != 0 {
		t.Fatalf("kernel tainted %#x before the test", taint)
	}
	logBefore := len(kernelLog(t))
	top := testutil.NewRouter(t)
	holdStaticKeys(t, top.Server)
	fl := startFlood(t, top, 31000)
	kmemleak := "/sys/kernel/debug/kmemleak"
	hasKmemleak := os.WriteFile(kmemleak, []byte("clear"), 0) == nil
	cycle := func(i int) uint64 {
		if err := testutil.InsertModule(path, ""); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		c, err := Dial()
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		defer c.Close()
		fresh, err := c.ModuleStats()
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		var ss []*Session
		for _, f := range []Filter{{Netns: top.Router.Inode}, {Families: FamilyIPv4}} {
			s, err := c.NewSession(SessionConfig{Filter: f, ReadBuffer: 1 << 20})
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			defer s.Close()
			if err := s.Enable(EnableConfig{}); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			ss = append(ss, s)
		}
		// A third session, of a process killed with SIGKILL.
		var child *exec.Cmd
		if i%10 == 0 {
			child, _ = startSessionProcess(t, top.Router.Inode)
		}
		var n uint64
		_ = ss[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var d Drop
		for ss[0].Read(&d) == nil {
			n++
		}
		if child != nil {
			_ = child.Process.Signal(syscall.SIGKILL)
			_ = child.Wait()
		}
		if i%2 == 0 {
			// Sockets closed while enabled: the module ends the sessions.
			for _, s := range ss {
				s.Close()
			}
			var now ModuleStats
			if !waitFor(5*time.Second, func() bool {
				now, err = c.ModuleStats()
				return err == nil && now.Sessions == 0
			}) {
				t.Fatalf("cycle %d: sessions left: %+v, %v", i, now, err)
			}
			checkMemoryBack(t, i, fresh, now)
		}
		// Odd cycles: sessions open, enabled, reading, under traffic.
		if err := testutil.UnloadModule(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		return n
	}
	cycle(0) // warm up: first-use allocations are no leak
	slab0, percpu0, vmalloc0 := meminfo(t, "Slab"), meminfo(t, "Percpu"), meminfo(t, "VmallocUsed")
	var events uint64
	for i := 1; i <= 50; i++ {
		events += cycle(i)
	}
	fl.halt()
	slab1, percpu1, vmalloc1 := meminfo(t, "Slab"), meminfo(t, "Percpu"), meminfo(t, "VmallocUsed")
	t.Logf("50 cycles: %d packets sent, %d drop events read; Slab %d -> %d KiB, Percpu %d -> %d KiB, VmallocUsed %d -> %d KiB",
		fl.sent.Load(), events, slab0, slab1, percpu0, percpu1, vmalloc0, vmalloc1)
	if events == 0 {
		t.Error("no drop events during the cycles")
	}
	// A leak of one object per packet or per cycle would show in megabytes
	// (Slab), in the module's per-CPU data of a few KiB a cycle (Percpu),
	// its in-flight table of 200 KiB a cycle (VmallocUsed, when vmalloc'd)
	// or its text; the flood's sockets and caches move the figures by less.
	if slab1-slab0 > 4096 {
		t.Errorf("Slab grew by %d KiB over 50 cycles", slab1-slab0)
	}
	if percpu1-percpu0 > 64 {
		t.Errorf("Percpu grew by %d KiB over 50 cycles", percpu1-percpu0)
	}
	if vmalloc1-vmalloc0 > 256 {
		t.Errorf("VmallocUsed grew by %d KiB over 50 cycles", vmalloc1-vmalloc0)
	}
	if hasKmemleak {
		_ = os.WriteFile(kmemleak, []byte("scan"), 0)
		b, _ := os.ReadFile(kmemleak)
		if strings.Contains(string(b), "pktfate") {
			t.Errorf("kmemleak:\n%s", b)
		}
	} else {
		t.Log("kernel without kmemleak: meminfo and the module's counters only")
	}
	if taint := readTaint(t); taint&^allowedTaint != 0 {
		t.Errorf("kernel tainted %#x, allowed only %#x (out-of-tree, unsigned)", taint, allowedTaint)
	}
	for _, l := range kernelLog(t)[logBefore:] {
		if strings.Contains(l, "module verification failed") {
			continue // the unsigned module's taint (E), allowed
		}
		if strings.Contains(l, "WARNING") || strings.Contains(l, "BUG") || strings.Contains(l, "Oops") ||
			strings.Contains(l, "Call Trace") || strings.Contains(l, "pktfate") {
			t.Errorf("kernel log: %s", l)
		}
	}
}

// TestKernelMemoryCounters: the module's allocation counters follow its
// sessions: each adds its struct, filter, per-CPU data and per-CPU rings,
// a filter replaced is freed, messages are released once sent, and a
// session's end gives everything back.
func TestKernelMemoryCounters(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	// After the router: its devices' hook entries are part of fresh.
	fresh := moduleStats(t, c)
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	one := moduleStats(t, c)
	cpus := int64(runtime.NumCPU())
	for k, want := range map[MemKind]int64{MemSession: 1, MemFilter: 1, MemPercpu: 1, MemRing: cpus} {
		_, f := fresh.Memory[k].InUse()
		if _, o := one.Memory[k].InUse(); o-f != want {
			t.Errorf("%s: %d objects more with a session, want %d", k, o-f, want)
		}
	}
	if b, _ := one.Memory[MemRing].InUse(); b < cpus*256*64 {
		t.Errorf("rings of %d bytes for %d CPUs of 256 records", b, cpus)
	}
	if err := s.SetFilter(Filter{Netns: top.Router.Inode, Families: FamilyIPv4}); err != nil {
		t.Fatal(err)
	}
	f := families[0]
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", 31900); err != nil {
		t.Fatal(err)
	}
	sendN(t, udpSocket(t, top.Client, f.Network), netip.AddrPortFrom(f.Server, 31900), 10, 12)
	if !waitFor(5*time.Second, func() bool { return dc.count(toPort(31900)) == 10 }) {
		t.Fatalf("%d of 10 drops", dc.count(toPort(31900)))
	}
	m := moduleStats(t, c)
	msg := m.Memory[MemMessage]
	if msg.AllocObjects < 10 || msg.AllocObjects != msg.FreedObjects || msg.AllocBytes != msg.FreedBytes {
		t.Errorf("messages %+v: want 10 or more, each released", msg)
	}
	if _, o := m.Memory[MemFilter].InUse(); o != 1 {
		// The old filter waits for a grace period: give it one.
		if !waitFor(5*time.Second, func() bool { _, o := moduleStats(t, c).Memory[MemFilter].InUse(); return o == 1 }) {
			t.Errorf("%d filters in use after replacing the only one", o)
		}
	}
	dc.close()
	if !waitFor(5*time.Second, func() bool { return moduleStats(t, c).Sessions == 0 }) {
		t.Fatal("session left after its socket closed")
	}
	// Hook entries follow devices, not sessions: those of namespaces
	// earlier tests deleted go whenever the kernel's cleanup gets to them
	// (6.1 freed four during this test).
	checkMemoryBack(t, 0, fresh, moduleStats(t, c), MemHooks)
}

// vethPath is a sender in one namespace and a reading sink in another,
// joined by a veth pair.
type vethPath struct {
	src *net.UDPConn
	dst netip.AddrPort
}

func newVethPath(t *testing.T, subnet byte) (*vethPath, *netns.NS, *netns.NS) {
	t.Helper()
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	if err := netns.Veth(a, "a0", b, "b0"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("a0", fmt.Sprintf("10.9.%d.1/24", subnet)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("b0", fmt.Sprintf("10.9.%d.2/24", subnet)); err != nil {
		t.Fatal(err)
	}
	port, _ := sink(t, b, "udp4")
	p := &vethPath{src: udpSocket(t, a, "udp4")}
	p.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, subnet, 2}), port)
	return p, a, b
}

// threadNanos returns the calling thread's CPU time.
func threadNanos() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}

// batchSender returns a function sending a batch of 20 packets over p.
func batchSender(p *vethPath) func() {
	payload := make([]byte, 64)
	return func() {
		for range 20 {
			_, _ = p.src.WriteToUDPAddrPort(payload, p.dst)
		}
	}
}

// yardstick is work no netfilter hook touches (200 getppid system calls):
// it follows only the speed TCG has at the moment.
func yardstick() {
	for range 200 {
		unix.Getppid()
	}
}

// costRatio runs the batches x and y alternately and returns the median,
// over the rounds, of y's CPU time over x's, and the mean nanoseconds of
// each batch. Each send runs the whole path on the sending thread
// (LOCAL_OUT, POST_ROUTING, the veth, and in the softirq that runs when the
// send re-enables bottom halves, PRE_ROUTING, LOCAL_IN and the socket);
// thread CPU time leaves out what else the guest runs, and short
// alternating batches cancel most of TCG's drift with the host's load.
func costRatio(x, y func(), rounds int) (ratio, nsX, nsY float64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timed := func(f func()) int64 {
		t0 := threadNanos()
		f()
		return threadNanos() - t0
	}
	for range 20 { // warm up
		x()
		y()
	}
	ratios := make([]float64, 0, rounds)
	var sumX, sumY int64
	for i := range rounds {
		var dx, dy int64
		if i%2 == 0 {
			dx, dy = timed(x), timed(y)
		} else {
			dy, dx = timed(y), timed(x)
		}
		if dx > 0 && dy > 0 {
			ratios = append(ratios, float64(dy)/float64(dx))
		}
		sumX += dx
		sumY += dy
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2], float64(sumX) / float64(rounds), float64(sumY) / float64(rounds)
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

// TestKernelHookCost measures the CPU cost per packet of UDP through a veth
// pair (four inet hook chains crossed: LOCAL_OUT and POST_ROUTING in the
// sender's namespace, PRE_ROUTING and LOCAL_IN in the receiver's, plus the
// devices' egress and ingress), always against a second, identical pair in
// the same moments:
//   - reference: nftables accept chains on those inet hooks of one pair;
//   - module loaded without sessions, against the same pair without the
//     module (this one cannot alternate per batch: load and unload
//     alternate between rounds, so it is the noisiest figure);
//   - a session enabled, one pair's receiving namespace tracked (the
//     filter selects it), the other's not.
//
// Figures only: TCG makes absolute numbers meaningless.
func TestKernelHookCost(t *testing.T) {
	path := testutil.ModulePath(t)
	holdStaticKeys(t, testutil.NewNS(t))
	p1, _, _ := newVethPath(t, 1)
	p2, a2, b2 := newVethPath(t, 2)

	chains := "table inet pktfate_kmod_ref {\n" +
		" chain out { type filter hook output priority 0; policy accept; }\n" +
		" chain post { type filter hook postrouting priority 0; policy accept; }\n" +
		" chain pre { type filter hook prerouting priority 0; policy accept; }\n" +
		" chain in { type filter hook input priority 0; policy accept; }\n}\n"
	for _, ns := range []*netns.NS{a2, b2} {
		nft(t, ns, chains)
	}
	s1, s2 := batchSender(p1), batchSender(p2)
	rNft, ns1, ns2 := costRatio(s1, s2, 2000)
	t.Logf("hook cost reference, nftables accept chains on the 4 hooks: %.0f -> %.0f ns per 20 packets, median ratio %.3f", ns1, ns2, rNft)
	for _, ns := range []*netns.NS{a2, b2} {
		if out, err := ns.Exec(context.Background(), "", "nft", "delete", "table", "inet", "pktfate_kmod_ref"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}

	// Loaded vs not cannot alternate per batch: phases alternate, and
	// within each the cost is taken relative to the yardstick.
	var without, loaded []float64
	for i := range 12 {
		if i%2 == 1 {
			if err := testutil.InsertModule(path, ""); err != nil {
				t.Fatal(err)
			}
		}
		r, _, _ := costRatio(yardstick, s1, 300)
		if i%2 == 1 {
			loaded = append(loaded, r)
			if err := testutil.UnloadModule(); err != nil {
				t.Fatal(err)
			}
		} else {
			without = append(without, r)
		}
	}
	rLoaded := median(loaded) / median(without)
	t.Logf("hook cost module loaded, no session: packet/yardstick cost %.3f -> %.3f (median of 6 phases each), ratio %.3f", median(without), median(loaded), rLoaded)

	loadModule(t, "")
	c := dial(t)
	s, err := c.NewSession(SessionConfig{Filter: Filter{Netns: b2.Inode}, ReadBuffer: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Enable(EnableConfig{}); err != nil {
		t.Fatal(err)
	}
	rTrack, nsOff, nsOn := costRatio(s1, s2, 2000)
	st := sessionStats(t, s)
	t.Logf("hook cost session enabled, tracking in the receiver's namespace (PRE_ROUTING, LOCAL_IN, ingress): %.0f -> %.0f ns per 20 packets, median ratio %.3f", nsOff, nsOn, rTrack)
	t.Logf("hook cost summary, CPU per packet relative to no module: nftables accept chains on 4 hooks x%.3f, module loaded without session x%.3f, tracking the receiver's half x%.3f",
		rNft, rLoaded, rLoaded*rTrack)
	if st.Seen != 0 || st.TableFull != 0 || st.Module.Tracked == 0 {
		t.Errorf("accepted traffic: stats %+v, want packets tracked, nothing seen and nothing untracked", st)
	}
}
