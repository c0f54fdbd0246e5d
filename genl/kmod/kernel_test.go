package kmod

// Tests against pktfate.ko in the running kernel. The host kernel cannot
// load modules (see KERNELS.md): there, TestDialKernel asserts that the
// family's absence surfaces as os.ErrNotExist, and the other tests skip.
// Inside the kernel matrix (PKTFATE_VM set, the module built for the guest's
// kernel in PKTFATE_KMOD_DIR) they all run, one after the other: the
// module's state is global, and each test loads and unloads it.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// TestDialKernel: on the host (no loadable modules) Dial must fail with
// os.ErrNotExist and say how to load the module; in the VM the same holds
// before insmod, and Dial works after it.
func TestDialKernel(t *testing.T) {
	if testutil.InVM() == "" {
		c, err := Dial()
		if err == nil {
			c.Close()
			t.Fatal("Dial on the host found a pktfate family; the host kernel cannot load modules")
		}
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "insmod") {
			t.Fatalf("Dial without the module: %v, want os.ErrNotExist and the insmod hint", err)
		}
		t.Logf("host: %v", err)
		return
	}
	if _, err := Dial(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Dial before insmod: %v, want os.ErrNotExist", err)
	}
	testutil.LoadModule(t)
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Enabled || st.QueueLen != 256 || st.Rate != 10000 || st.Burst != 1000 {
		t.Errorf("fresh module's stats %+v", st)
	}
	recordRaw(t, c, "stats.hex", "GET_STATS reply of a fresh module")
}

func kernelClient(t testing.TB) *Client {
	t.Helper()
	testutil.LoadModule(t)
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// record prints a raw netlink message between markers, to be copied into
// testdata/kmod/<line>/<name>.
func record(t *testing.T, name, comment string, raw []byte) {
	t.Helper()
	fixture := testutil.HexFixture(t, comment, raw)
	fmt.Printf("=== kmod-fixture %s/%s\n%s=== end kmod-fixture\n", testutil.KernelLine(), name, fixture)
}

// rawMessage rebuilds the bytes of a netlink message as the kernel sent it.
func rawMessage(m netlink.Message) []byte {
	b := make([]byte, nlmsgHeaderLen+len(m.Data))
	binary.NativeEndian.PutUint32(b[0:], m.Header.Length)
	binary.NativeEndian.PutUint16(b[4:], uint16(m.Header.Type))
	binary.NativeEndian.PutUint16(b[6:], uint16(m.Header.Flags))
	binary.NativeEndian.PutUint32(b[8:], m.Header.Sequence)
	binary.NativeEndian.PutUint32(b[12:], m.Header.PID)
	copy(b[16:], m.Data)
	return b
}

// recordRaw records a GET_STATS exchange on a plain netlink socket.
func recordRaw(t *testing.T, c *Client, name, comment string) {
	t.Helper()
	conn, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(c.conn.Family.ID), Flags: netlink.Request},
		Data:   []byte{cmdGetStats, familyVersion, 0, 0},
	}
	msgs, err := conn.Execute(req)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("raw GET_STATS: %d messages, %v", len(msgs), err)
	}
	record(t, name, comment, rawMessage(msgs[0]))
}

// dropCollector reads events in the background.
type dropCollector struct {
	ev   *Events
	mu   sync.Mutex
	got  []Drop
	raws [][]byte
	done chan error
}

func listen(t *testing.T, c *Client) *dropCollector {
	t.Helper()
	ev, err := c.Listen(ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dc := &dropCollector{ev: ev, done: make(chan error, 1)}
	var last []byte
	ev.r.Tap = func(m netlink.Message) { last = rawMessage(m) }
	go func() {
		var d Drop
		for {
			err := ev.Read(&d)
			if err != nil {
				if errors.Is(err, ErrClosed) {
					err = nil
				}
				dc.done <- err
				return
			}
			cp := d
			cp.Payload = append([]byte(nil), d.Payload...)
			dc.mu.Lock()
			dc.got = append(dc.got, cp)
			dc.raws = append(dc.raws, last)
			dc.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ev.Close()
		if err := <-dc.done; err != nil {
			t.Error(err)
		}
	})
	return dc
}

// find returns the first event matching, waiting up to d, and its raw bytes.
func (dc *dropCollector) find(d time.Duration, match func(*Drop) bool) (*Drop, []byte) {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		dc.mu.Lock()
		for i := range dc.got {
			if match(&dc.got[i]) {
				e, r := dc.got[i], dc.raws[i]
				dc.mu.Unlock()
				return &e, r
			}
		}
		dc.mu.Unlock()
		if time.Now().After(end) {
			return nil, nil
		}
	}
}

// udpDst returns the destination of a UDP packet from its network header.
func udpDst(p []byte) (netip.AddrPort, bool) {
	switch {
	case len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP:
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+4 {
			return netip.AddrPort{}, false
		}
		a, _ := netip.AddrFromSlice(p[16:20])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[ihl+2:])), true
	case len(p) >= 48 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_UDP:
		a, _ := netip.AddrFromSlice(p[24:40])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[42:])), true
	}
	return netip.AddrPort{}, false
}

// families are the router's address families with their NFPROTO value.
var families = []struct {
	testutil.RouterAddrs
	pf uint8
}{
	{testutil.RouterFamilies[0], NFProtoIPv4},
	{testutil.RouterFamilies[1], NFProtoIPv6},
}

// udpSocket opens an unconnected UDP socket inside ns.
func udpSocket(t testing.TB, ns *netns.NS, network string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP(network, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func send(t testing.TB, conn *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	// A drop in LOCAL_OUT fails the send with EPERM: that is the drop.
	if _, err := conn.WriteToUDPAddrPort([]byte("pktfate kmod"), dst); err != nil && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("sending to %v: %v", dst, err)
	}
}

// TestKernelHookDrops puts a DROP rule on LOCAL_IN, FORWARD and LOCAL_OUT
// with iptables-legacy, iptables-nft and nftables, for IPv4 and IPv6, and
// checks that the module reports the drop inside that hook, with the
// router's namespace, devices and packet; a packet to the next port (no
// rule: accepted by netfilter, then dropped for want of a socket, outside
// any hook) is never reported.
func TestKernelHookDrops(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	if err := c.SetFilter(Filter{Netns: top.Router.Inode}); err != nil {
		t.Fatal(err)
	}
	dc := listen(t, c)
	if err := c.Enable(EnableConfig{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	r0, _ := top.Router.Ifindex("r0")
	r1, _ := top.Router.Ifindex("r1")
	ctx := context.Background()
	port := uint16(30000)
	recorded := map[string]bool{}
	for _, tool := range []string{"iptables-legacy", "iptables-nft", "nftables"} {
		for _, f := range families {
			fromClient := udpSocket(t, top.Client, f.Network)
			fromRouter := udpSocket(t, top.Router, f.Network)
			for _, hook := range []string{"LOCAL_IN", "FORWARD", "LOCAL_OUT"} {
				port += 2
				name := fmt.Sprintf("%s/%s/%s", tool, f.Network, hook)
				if err := testutil.AddRule(ctx, top.Router, tool, f.Network, hook, "DROP", port); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				var dst netip.Addr
				conn := fromClient
				var in, out uint32
				switch hook {
				case "LOCAL_IN":
					dst, in = f.RouterIn, uint32(r0)
				case "FORWARD":
					dst, in, out = f.Server, uint32(r0), uint32(r1)
				case "LOCAL_OUT":
					dst, out, conn = f.Server, uint32(r1), fromRouter
				}
				send(t, conn, netip.AddrPortFrom(dst, port))
				send(t, conn, netip.AddrPortFrom(dst, port+1))
				d, raw := dc.find(5*time.Second, func(d *Drop) bool {
					a, ok := udpDst(d.Payload)
					return ok && a.Port() == port
				})
				if d == nil {
					st, _ := c.Stats()
					t.Errorf("%s: no drop reported (stats %+v)", name, st)
				} else {
					if HookName(d.Hook) != hook || d.Family != f.pf || d.Netns != top.Router.Inode ||
						d.InIfindex != in || d.OutIfindex != out || d.Skb == 0 || d.Mono == 0 || d.Reason == 0 || d.Location == 0 {
						t.Errorf("%s: drop %+v, want hook %s family %d netns %d in %d out %d", name, d, hook, f.pf, top.Router.Inode, in, out)
					}
					if a, _ := udpDst(d.Payload); a.Addr() != dst {
						t.Errorf("%s: payload to %s, want %s", name, a, dst)
					}
					if key := f.Network + "_" + strings.ToLower(hook); tool == "nftables" && !recorded[key] {
						recorded[key] = true
						record(t, "drop_"+key+".hex", "DROP event of UDP to port "+strconv.Itoa(int(port))+" dropped by nftables in "+hook, raw)
					}
				}
				if d, _ := dc.find(300*time.Millisecond, func(d *Drop) bool {
					a, ok := udpDst(d.Payload)
					return ok && a.Port() == port+1
				}); d != nil {
					t.Errorf("%s: accepted packet reported: %+v", name, d)
				}
			}
			if err := testutil.FlushRules(ctx, top.Router, tool); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.Seen < 18 || st.Reported < 18 || st.Lost() != 0 || !st.Enabled || st.Filter.Netns != top.Router.Inode {
		t.Errorf("stats %+v, want 18 seen and reported, nothing lost", st)
	}
	if err := c.Disable(); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Stats(); st.Enabled {
		t.Error("still enabled after Disable")
	}
}

// TestKernelFilterAndErrors: the filter's mark and family apply, strict
// policy refuses what it does not know, with the module's message.
func TestKernelFilterAndErrors(t *testing.T) {
	c := kernelClient(t)
	err := c.SetFilter(Filter{Families: 4})
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetFilter with an unknown family bit: %v, want EINVAL", err)
	}
	if err := c.Enable(EnableConfig{Burst: 2 << 20}); !errors.Is(err, unix.ERANGE) {
		t.Errorf("Enable with a burst over the limit: %v, want ERANGE", err)
	}
	// An attribute the command does not take is refused too.
	_, err = c.conn.Execute(cmdEnable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) { ae.Uint32(attrMax+1, 1) })
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Enable with an unknown attribute: %v, want EINVAL", err)
	}
	err = c.SetFilter(Filter{Mark: 7, MarkMask: 0xff, Families: FamilyIPv6})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Filter != (Filter{Mark: 7, MarkMask: 0xff, Families: FamilyIPv6}) {
		t.Errorf("filter read back %+v", st.Filter)
	}
}

// helperEnv makes the test binary act as an unprivileged client.
const helperEnv = "PKTFATE_KMOD_UNPRIV_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(unprivilegedHelper())
	}
	os.Exit(m.Run())
}

// unprivilegedHelper runs as nobody: every command and joining the events
// group must fail with EPERM.
func unprivilegedHelper() int {
	c, err := Dial()
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	rc := 0
	check := func(what string, err error) {
		if errors.Is(err, unix.EPERM) && errors.Is(err, os.ErrPermission) {
			fmt.Printf("%s: EPERM\n", what)
			return
		}
		fmt.Printf("%s: %v, want EPERM\n", what, err)
		rc = 1
	}
	check("ENABLE", c.Enable(EnableConfig{}))
	check("DISABLE", c.Disable())
	check("SET_FILTER", c.SetFilter(Filter{}))
	_, err = c.Stats()
	check("GET_STATS", err)
	ev, err := c.Listen(ListenConfig{ReadBuffer: 1 << 16})
	if err == nil {
		ev.Close()
	}
	check("join events", err)
	return rc
}

// TestKernelUnprivileged: a process running as nobody, without
// capabilities, can neither send commands nor join the events group.
func TestKernelUnprivileged(t *testing.T) {
	kernelClient(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("unprivileged helper: %v", err)
	}
	if n := strings.Count(string(out), ": EPERM"); n != 5 {
		t.Errorf("%d of 5 operations refused with EPERM", n)
	}
}

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
	sink := udpSocket(t, top.Server, f.Network)
	go func() {
		b := make([]byte, 2048)
		for {
			if _, err := sink.Read(b); err != nil {
				return
			}
		}
	}()
	open := sink.LocalAddr().(*net.UDPAddr).AddrPort().Port()
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

// holdStaticKeys keeps the kernel text that the module's (un)registration
// would patch unchanged for the rest of the test. The kfree_skb tracepoint
// gets two probes of its own (its tracefs event and a BPF raw tracepoint
// program), so that adding and removing the module's probe leaves both its
// static key and its static call (which points at the only probe while
// there is one) as they are; netfilter's per-hook keys (nf_hooks_needed) get
// an nftables table in ns with a base chain on every inet hook. Reason:
// under QEMU's multi-threaded TCG, live text patching (text_poke_bp) of
// those sites while the other vCPU executes them oopsed with "int3" in
// sk_skb_reason_drop on 6.12 (at the static_call site and at the static
// branch), in kernel code the module does not touch; with the text held,
// loading and unloading only swaps RCU-protected arrays, which is what
// these tests are about.
func holdStaticKeys(t *testing.T, ns *netns.NS) {
	t.Helper()
	tracefs := "/sys/kernel/tracing"
	if _, err := os.Stat(tracefs + "/events"); err != nil {
		if err := unix.Mount("nodev", tracefs, "tracefs", 0, ""); err != nil {
			t.Fatalf("mounting tracefs: %v", err)
		}
	}
	ev := tracefs + "/events/skb/kfree_skb/enable"
	if err := os.WriteFile(ev, []byte("1"), 0); err != nil {
		t.Fatalf("enabling the kfree_skb trace event: %v", err)
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
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "kfree_skb", Program: prog})
	if err != nil {
		t.Fatalf("attaching a no-op program to kfree_skb: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	var b strings.Builder
	b.WriteString("table inet pktfate_kmod_keys {\n")
	for _, h := range []string{"prerouting", "input", "forward", "output", "postrouting"} {
		fmt.Fprintf(&b, " chain %s { type filter hook %s priority 0; policy accept; }\n", h, h)
	}
	b.WriteString("}\n")
	if out, err := ns.Exec(context.Background(), b.String(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
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

// TestKernelLoadCycles loads, enables (with a listener) and unloads the
// module 50 times under a UDP flood whose half the router drops: no oops,
// no warning, taint only from an out-of-tree unsigned module, no slab
// growth (and no kmemleak report where the kernel has kmemleak).
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
		ev, err := c.Listen(ListenConfig{ReadBuffer: 1 << 20})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := c.Enable(EnableConfig{}); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		var n uint64
		_ = ev.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var d Drop
		for ev.Read(&d) == nil {
			n++
		}
		// Unload while enabled, with packets in flight and a listener.
		if err := testutil.UnloadModule(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		ev.Close()
		c.Close()
		return n
	}
	cycle(0) // warm up: first-use allocations are no leak
	slab0 := meminfo(t, "Slab")
	var events uint64
	for i := 1; i <= 50; i++ {
		events += cycle(i)
	}
	fl.halt()
	slab1 := meminfo(t, "Slab")
	t.Logf("50 cycles: %d packets sent, %d drop events read; Slab %d -> %d KiB", fl.sent.Load(), events, slab0, slab1)
	if events == 0 {
		t.Error("no drop events during the cycles")
	}
	// A leak of one object per packet or per cycle would show in megabytes;
	// the flood's own sockets and caches move the figure by less.
	if slab1-slab0 > 4096 {
		t.Errorf("Slab grew by %d KiB over 50 cycles", slab1-slab0)
	}
	if hasKmemleak {
		_ = os.WriteFile(kmemleak, []byte("scan"), 0)
		b, _ := os.ReadFile(kmemleak)
		if strings.Contains(string(b), "pktfate") {
			t.Errorf("kmemleak:\n%s", b)
		}
	} else {
		t.Log("kernel without kmemleak: slab figures only")
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
	sink := udpSocket(t, b, "udp4")
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	p := &vethPath{src: udpSocket(t, a, "udp4")}
	p.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, subnet, 2}), sink.LocalAddr().(*net.UDPAddr).AddrPort().Port())
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
// pair (four hook chains crossed: LOCAL_OUT and POST_ROUTING in the
// sender's namespace, PRE_ROUTING and LOCAL_IN in the receiver's), always
// against a second, identical pair in the same moments:
//   - reference: nftables accept chains on those hooks of one pair;
//   - module loaded and disabled, against the same pair without the module
//     (this one cannot alternate per batch: load and unload alternate
//     between rounds, so it is the noisiest figure);
//   - module enabled, one pair's receiving namespace tracked (the filter
//     selects it), the other's not.
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
		if out, err := ns.Exec(context.Background(), chains, "nft", "-f", "-"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
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
	t.Logf("hook cost module loaded and disabled: packet/yardstick cost %.3f -> %.3f (median of 6 phases each), ratio %.3f", median(without), median(loaded), rLoaded)

	if err := testutil.InsertModule(path, ""); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := testutil.UnloadModule(); err != nil {
			t.Error(err)
		}
	}()
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetFilter(Filter{Netns: b2.Inode}); err != nil {
		t.Fatal(err)
	}
	if err := c.Enable(EnableConfig{}); err != nil {
		t.Fatal(err)
	}
	rTrack, nsOff, nsOn := costRatio(s1, s2, 2000)
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hook cost module enabled, tracking in 2 of the 4 hooks (the receiver's namespace): %.0f -> %.0f ns per 20 packets, median ratio %.3f", nsOff, nsOn, rTrack)
	t.Logf("hook cost summary, CPU per packet relative to no hooks: nftables accept chains x%.3f, module loaded and disabled x%.3f, enabled x%.3f (tracking on all 4 hooks, extrapolated)",
		rNft, rLoaded, rLoaded*(1+2*(rTrack-1)))
	if st.Seen != 0 || st.TableFull != 0 {
		t.Errorf("accepted traffic: stats %+v, want nothing seen and nothing untracked", st)
	}
}

// TestKernelRateLimit: over the rate limit, drops are counted as rate
// limited instead of reported, and what is reported arrives.
func TestKernelRateLimit(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	if err := c.SetFilter(Filter{Netns: top.Router.Inode}); err != nil {
		t.Fatal(err)
	}
	dc := listen(t, c)
	// One token a second per CPU, five in the bucket.
	if err := c.Enable(EnableConfig{Rate: 1, Burst: 5}); err != nil {
		t.Fatal(err)
	}
	f := families[0]
	if err := testutil.AddRule(context.Background(), top.Router, "nftables", f.Network, "FORWARD", "DROP", 31500); err != nil {
		t.Fatal(err)
	}
	conn := udpSocket(t, top.Client, f.Network)
	const n = 200
	start := time.Now()
	for range n {
		send(t, conn, netip.AddrPortFrom(f.Server, 31500))
	}
	elapsed := time.Since(start)
	dc.find(time.Second, func(*Drop) bool { return false })
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	dc.mu.Lock()
	got := len(dc.got)
	dc.mu.Unlock()
	t.Logf("%d drops in %s: %+v, %d events read", n, elapsed, st, got)
	// Each CPU may report its burst plus a token a second.
	limit := uint64(2 * (5 + int(elapsed.Seconds()) + 1))
	// (A few of the first packets may wait for ARP and overflow its queue.)
	if st.Seen < n*9/10 || st.Reported > limit || st.Reported+st.RateLimited != st.Seen || st.RateLimited == 0 {
		t.Errorf("stats %+v: want %d seen, at most %d reported, the rest rate limited", st, n, limit)
	}
	if st.Seen != st.Reported+st.Lost() {
		t.Errorf("stats %+v: seen is not reported + lost", st)
	}
	if uint64(got) != st.Reported {
		t.Errorf("%d events read, %d reported", got, st.Reported)
	}
}

// TestKernelQueueFull: with a per-CPU queue of 2 and a burst of drops, the
// overflow is counted, and every seen drop is either reported or counted.
func TestKernelQueueFull(t *testing.T) {
	if err := testutil.InsertModule(testutil.ModulePath(t), "queue_len=2"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testutil.UnloadModule(); err != nil {
			t.Error(err)
		}
	})
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	top := testutil.NewRouter(t)
	if err := c.SetFilter(Filter{Netns: top.Router.Inode}); err != nil {
		t.Fatal(err)
	}
	listen(t, c)
	if err := c.Enable(EnableConfig{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	fl := startFlood(t, top, 31600)
	time.Sleep(time.Second)
	fl.halt()
	time.Sleep(500 * time.Millisecond) // the work item drains the queues
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packets: %+v", fl.sent.Load(), st)
	if st.QueueLen != 2 || st.QueueFull == 0 || st.Reported == 0 || st.Seen != st.Reported+st.Lost() {
		t.Errorf("stats %+v: want queue overflows counted and seen = reported + lost", st)
	}
}
