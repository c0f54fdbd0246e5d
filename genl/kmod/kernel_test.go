package kmod

// Tests against pktfate.ko in the running kernel. The host kernel cannot
// load modules (see KERNELS.md): there, TestDialKernel asserts that the
// family's absence surfaces as os.ErrNotExist, and the other tests skip.
// Inside the kernel matrix (PKTFATE_VM set, the module built for the guest's
// kernel in PKTFATE_KMOD_DIR) they all run, one after the other, each
// loading and unloading the module.
//
// kernel_test.go: sessions, errors, privileges, the inet hooks;
// kernel_coverage_test.go: bridge, arp, netdev, extreme priorities;
// kernel_losses_test.go: every loss and information counter;
// kernel_leak_test.go: load cycles, memory, cost.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
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
	c := kernelClient(t)
	m, err := c.ModuleStats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fresh module: %+v", m)
	if m.Sessions != 0 || m.QueueLen != 256 || m.SessionsMax != SessionsMax || m.TableSize != 2048 || m.Stale != time.Second ||
		m.Families != FamilyMask || m.NetdevHooks != 1<<NetdevIngress|1<<NetdevEgress || m.HookFailures != 0 {
		t.Errorf("fresh module's stats %+v", m)
	}
	if b, o := m.Memory[MemTable].InUse(); o != 1 || b < 2048*64 {
		t.Errorf("table memory in use: %d bytes, %d objects", b, o)
	}
	for _, k := range []MemKind{MemRing, MemSession, MemFilter, MemMessage} {
		if m.Memory[k] != (Memory{}) {
			t.Errorf("%s memory before any session: %+v", k, m.Memory[k])
		}
	}
	recordStats(t, c, 0, "stats.hex", "GET_STATS reply of a fresh module")
	s, _ := startSession(t, c, SessionConfig{}, nil)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Session != s.ID() || st.Enabled || st.Rate != 10000 || st.Burst != 1000 || st.Module.Sessions != 1 {
		t.Errorf("fresh session's stats %+v", st)
	}
	recordStats(t, c, s.ID(), "session_stats.hex", "GET_STATS reply for a fresh session")
}

// loadModule loads pktfate.ko with params for the rest of the test.
func loadModule(t testing.TB, params string) {
	t.Helper()
	if err := testutil.InsertModule(testutil.ModulePath(t), params); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testutil.UnloadModule(); err != nil {
			t.Error(err)
		}
	})
}

func dial(t testing.TB) *Client {
	t.Helper()
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func kernelClient(t testing.TB) *Client {
	t.Helper()
	testutil.LoadModule(t)
	return dial(t)
}

// startSession opens a session, reads its events in the background, and
// enables it with en unless en is nil.
func startSession(t *testing.T, c *Client, cfg SessionConfig, en *EnableConfig) (*Session, *dropCollector) {
	t.Helper()
	s, err := c.NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc := collect(t, s)
	if en != nil {
		if err := s.Enable(*en); err != nil {
			t.Fatal(err)
		}
	}
	return s, dc
}

var unlimited = &EnableConfig{Unlimited: true}

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

// recordStats records a GET_STATS exchange (for session id unless 0) on a
// plain netlink socket.
func recordStats(t *testing.T, c *Client, id uint32, name, comment string) {
	t.Helper()
	conn, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ae := netlink.NewAttributeEncoder()
	if id != 0 {
		ae.Uint32(attrSession, id)
	}
	attrs, _ := ae.Encode()
	data, _ := (&genetlink.Message{Header: genetlink.Header{Command: cmdGetStats, Version: familyVersion}, Data: attrs}).MarshalBinary()
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(c.conn.Family.ID), Flags: netlink.Request},
		Data:   data,
	})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("raw GET_STATS: %d messages, %v", len(msgs), err)
	}
	record(t, name, comment, rawMessage(msgs[0]))
}

// dropCollector reads a session's events in the background.
type dropCollector struct {
	s    *Session
	mu   sync.Mutex
	got  []Drop
	raws [][]byte
	done chan error
}

func collect(t *testing.T, s *Session) *dropCollector {
	t.Helper()
	dc := &dropCollector{s: s, done: make(chan error, 1)}
	var last []byte
	s.r.Tap = func(m netlink.Message) { last = rawMessage(m) }
	go func() {
		var d Drop
		for {
			err := s.Read(&d)
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
	t.Cleanup(dc.close)
	return dc
}

// close closes the session (if still open) and waits for the reader.
func (dc *dropCollector) close() {
	dc.s.Close()
	if dc.done != nil {
		<-dc.done
		dc.done = nil
	}
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

// count returns how many events match.
func (dc *dropCollector) count(match func(*Drop) bool) int {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	n := 0
	for i := range dc.got {
		if match(&dc.got[i]) {
			n++
		}
	}
	return n
}

// toPort matches UDP events to port.
func toPort(port uint16) func(*Drop) bool {
	return func(d *Drop) bool {
		a, ok := udpDst(d.Payload)
		return ok && a.Port() == port
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// sessionStats reads a session's stats or fails the test.
func sessionStats(t *testing.T, s *Session) Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func moduleStats(t *testing.T, c *Client) ModuleStats {
	t.Helper()
	m, err := c.ModuleStats()
	if err != nil {
		t.Fatal(err)
	}
	return m
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

// sink opens a UDP socket in ns that reads and counts what arrives.
func sink(t testing.TB, ns *netns.NS, network string) (uint16, func() int) {
	t.Helper()
	conn := udpSocket(t, ns, network)
	var mu sync.Mutex
	n := 0
	go func() {
		b := make([]byte, 65536)
		for {
			if _, err := conn.Read(b); err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort().Port(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func send(t testing.TB, conn *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	sendN(t, conn, dst, 1, 12)
}

// sendN sends n datagrams of size bytes.
func sendN(t testing.TB, conn *net.UDPConn, dst netip.AddrPort, n, size int) {
	t.Helper()
	payload := make([]byte, size)
	copy(payload, "pktfate kmod")
	for range n {
		// A drop in LOCAL_OUT fails the send with EPERM: that is the drop.
		if _, err := conn.WriteToUDPAddrPort(payload, dst); err != nil && !errors.Is(err, syscall.EPERM) {
			t.Fatalf("sending to %v: %v", dst, err)
		}
	}
}

// nft loads a ruleset into ns.
func nft(t testing.TB, ns *netns.NS, rules string) {
	t.Helper()
	if out, err := ns.Exec(context.Background(), rules, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, rules)
	}
}

// dropPath is a sender in one namespace and a receiving namespace that
// drops UDP to port in its input chain, joined by a veth pair.
type dropPath struct {
	from *net.UDPConn
	to   netip.Addr
	port uint16
	dst  *netns.NS
}

func newDropPath(t *testing.T, subnet byte, port uint16) *dropPath {
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
	nft(t, b, fmt.Sprintf("table inet pf {\n chain in { type filter hook input priority 0; udp dport %d drop; }\n}\n", port))
	return &dropPath{from: udpSocket(t, a, "udp4"), to: netip.AddrFrom4([4]byte{10, 9, subnet, 2}), port: port, dst: b}
}

func (p *dropPath) send(t *testing.T, n int) {
	t.Helper()
	sendN(t, p.from, netip.AddrPortFrom(p.to, p.port), n, 12)
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
	s, dc := startSession(t, c, SessionConfig{Filter: Filter{Netns: top.Router.Inode}}, unlimited)
	r0, _ := top.Router.Ifindex("r0")
	r1, _ := top.Router.Ifindex("r1")
	ctx := context.Background()
	port := uint16(30000)
	recorded := map[string]bool{}
	for _, tool := range testutil.FirewallTools {
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
				d, raw := dc.find(5*time.Second, toPort(port))
				if d == nil {
					t.Errorf("%s: no drop reported (stats %+v)", name, sessionStats(t, s))
				} else {
					if HookName(d.Family, d.Hook) != hook || d.Family != f.pf || d.Where != WhereChain || d.Netns != top.Router.Inode ||
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
				if d, _ := dc.find(300*time.Millisecond, toPort(port+1)); d != nil {
					t.Errorf("%s: accepted packet reported: %+v", name, d)
				}
			}
			if err := testutil.FlushRules(ctx, top.Router, tool); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := sessionStats(t, s)
	t.Logf("stats %+v", st)
	if st.Seen < 18 || st.Reported < 18 || st.Lost() != 0 || st.Unattributed() != 0 || !st.Enabled || st.Filter.Netns != top.Router.Inode {
		t.Errorf("stats %+v, want 18 seen and reported, nothing lost", st)
	}
	if err := s.Disable(); err != nil {
		t.Fatal(err)
	}
	if st := sessionStats(t, s); st.Enabled {
		t.Error("still enabled after Disable")
	}
}

// TestKernelTwoSessions: two sessions whose filters select different
// namespaces each get exactly their own drops; closing one (its socket,
// without DISABLE) ends it in the module and leaves the other's reports
// flowing, and nothing of the closed one stays enabled.
func TestKernelTwoSessions(t *testing.T) {
	c := kernelClient(t)
	pa, pb := newDropPath(t, 1, 30201), newDropPath(t, 2, 30202)
	a, da := startSession(t, c, SessionConfig{Filter: Filter{Netns: pa.dst.Inode}}, unlimited)
	b, db := startSession(t, c, SessionConfig{Filter: Filter{Netns: pb.dst.Inode}}, unlimited)
	if m := moduleStats(t, c); m.Sessions != 2 {
		t.Fatalf("%d sessions, want 2", m.Sessions)
	}
	pa.send(t, 5)
	pb.send(t, 5)
	for name, x := range map[string]struct {
		dc   *dropCollector
		s    *Session
		mine *dropPath
	}{"a": {da, a, pa}, "b": {db, b, pb}} {
		mine := func(d *Drop) bool { return d.Netns == x.mine.dst.Inode && toPort(x.mine.port)(d) }
		if !waitFor(5*time.Second, func() bool { return x.dc.count(mine) == 5 }) {
			t.Errorf("session %s: %d of its 5 drops", name, x.dc.count(mine))
		}
		if n := x.dc.count(func(d *Drop) bool { return !mine(d) }); n != 0 {
			t.Errorf("session %s got %d drops of the other's", name, n)
		}
		if st := sessionStats(t, x.s); st.Seen != 5 || st.Reported != 5 {
			t.Errorf("session %s: %+v, want 5 seen and reported", name, st.Counters)
		}
	}

	// Close a's socket: no DISABLE, the module ends the session.
	seen := moduleStats(t, c).Seen
	da.close()
	if !waitFor(5*time.Second, func() bool { return moduleStats(t, c).Sessions == 1 }) {
		t.Fatalf("a's session still exists after its socket closed: %+v", moduleStats(t, c))
	}
	if _, err := a.Stats(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("stats of the closed session: %v, want ENOENT", err)
	}
	pa.send(t, 5)
	pb.send(t, 5)
	mineB := func(d *Drop) bool { return d.Netns == pb.dst.Inode && toPort(pb.port)(d) }
	if !waitFor(5*time.Second, func() bool { return db.count(mineB) == 10 }) {
		t.Errorf("b after a closed: %d of its 10 drops", db.count(mineB))
	}
	// a's namespace is tracked no more: only b's 5 new drops were seen.
	if m := moduleStats(t, c); m.Seen != seen+5 {
		t.Errorf("module saw %d drops after a closed, want b's 5 only", m.Seen-seen)
	}
}

// sessionHelperEnv makes the test binary a process holding a session.
const sessionHelperEnv = "PKTFATE_KMOD_SESSION_HELPER"

// sessionHelper opens a session for the namespace in its environment,
// enables it, says so on stdout, and waits to be killed.
func sessionHelper() int {
	netnsInode, _ := strconv.ParseUint(os.Getenv(sessionHelperEnv), 10, 32)
	c, err := Dial()
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	s, err := c.NewSession(SessionConfig{Filter: Filter{Netns: uint32(netnsInode)}})
	if err != nil {
		fmt.Println("session:", err)
		return 1
	}
	if err := s.Enable(EnableConfig{Unlimited: true}); err != nil {
		fmt.Println("enable:", err)
		return 1
	}
	fmt.Printf("ready %d\n", s.ID())
	var d Drop
	for s.Read(&d) == nil {
	}
	return 0
}

// startSessionProcess runs sessionHelper for ns and returns it once its
// session is enabled.
func startSessionProcess(t *testing.T, ns uint32) (*exec.Cmd, uint32) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sessionHelperEnv+"="+strconv.FormatUint(uint64(ns), 10))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	var id uint32
	if _, serr := fmt.Sscanf(line, "ready %d", &id); err != nil || serr != nil {
		t.Fatalf("session helper: %q, %v", line, err)
	}
	return cmd, id
}

// TestKernelSessionKilled: a process holding an enabled session is killed
// with SIGKILL; the module ends its session, and its namespace's drops are
// neither tracked nor seen any more.
func TestKernelSessionKilled(t *testing.T) {
	c := kernelClient(t)
	p := newDropPath(t, 3, 30301)
	cmd, id := startSessionProcess(t, p.dst.Inode)
	m0 := moduleStats(t, c)
	if m0.Sessions != 1 {
		t.Fatalf("%d sessions with the helper's, want 1", m0.Sessions)
	}
	p.send(t, 3)
	if !waitFor(5*time.Second, func() bool { return moduleStats(t, c).Seen == m0.Seen+3 }) {
		t.Fatalf("the helper's session did not see its drops: %+v", moduleStats(t, c))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !waitFor(5*time.Second, func() bool { return moduleStats(t, c).Sessions == 0 }) {
		t.Fatalf("session %d survived its process: %+v", id, moduleStats(t, c))
	}
	m1 := moduleStats(t, c)
	p.send(t, 3)
	time.Sleep(300 * time.Millisecond) // nothing should come: give it the chance
	if m2 := moduleStats(t, c); m2.Seen != m1.Seen || m2.Tracked != m1.Tracked {
		t.Errorf("after the kill: seen %d -> %d, tracked %d -> %d, want nothing", m1.Seen, m2.Seen, m1.Tracked, m2.Tracked)
	}
}

// TestKernelSessionLimit: SessionsMax sessions at once, the next refused
// with ENOSPC and a message; one closed, the next fits.
func TestKernelSessionLimit(t *testing.T) {
	c := kernelClient(t)
	var ss []*Session
	for range SessionsMax {
		s, err := c.NewSession(SessionConfig{ReadBuffer: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ss = append(ss, s)
	}
	_, err := c.NewSession(SessionConfig{ReadBuffer: 1 << 16})
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), strconv.Itoa(SessionsMax)+" sessions exist") {
		t.Fatalf("session %d: %v, want ENOSPC saying %d sessions exist", SessionsMax+1, err, SessionsMax)
	}
	t.Logf("refused: %v", err)
	ss[3].Close()
	var s *Session
	if !waitFor(5*time.Second, func() bool {
		s, err = c.NewSession(SessionConfig{ReadBuffer: 1 << 16})
		return err == nil
	}) {
		t.Fatalf("no session after one closed: %v", err)
	}
	s.Close()
}

// TestKernelFilterAndErrors: each filter field selects (and rejects) what
// it says; strict policy refuses what it does not know, with the module's
// message; a command naming no session or one that does not exist fails.
func TestKernelFilterAndErrors(t *testing.T) {
	c := kernelClient(t)
	top := testutil.NewRouter(t)
	s, dc := startSession(t, c, SessionConfig{}, nil)
	if err := s.SetFilter(Filter{Families: 1 << 5}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetFilter with an unknown family bit: %v, want EINVAL", err)
	}
	if err := s.Enable(EnableConfig{Burst: 2 << 20}); !errors.Is(err, unix.ERANGE) {
		t.Errorf("Enable with a burst over the limit: %v, want ERANGE", err)
	}
	_, err := c.conn.Execute(cmdEnable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrSession, s.ID())
		ae.Uint32(attrMax+1, 1)
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Enable with an unknown attribute: %v, want EINVAL", err)
	}
	_, err = c.conn.Execute(cmdDisable, netlink.Acknowledge, nil)
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "no session") {
		t.Errorf("DISABLE from a socket without a session: %v, want ENOENT saying so", err)
	}
	_, err = c.conn.Execute(cmdDisable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) { ae.Uint32(attrSession, 1) })
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "no such session") {
		t.Errorf("DISABLE of session 1: %v, want ENOENT, no such session", err)
	}
	// SESSION_NEW twice from one socket, and with an attribute.
	raw, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetOption(netlink.ExtendedAcknowledge, true)
	if _, err := c.sessionNew(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := c.sessionNew(raw); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second SESSION_NEW on one socket: %v, want EEXIST", err)
	}

	// Marks: prerouting marks port+1, the input chain drops both ports,
	// IPv4 and IPv6; the filter takes IPv6 with mark 7 only.
	port := uint16(30400)
	nft(t, top.Router, fmt.Sprintf("table inet pf {\n chain pre { type filter hook prerouting priority 0; udp dport %d meta mark set 7; }\n"+
		" chain in { type filter hook input priority 0; udp dport { %d, %d } drop; }\n}\n", port+1, port, port+1))
	want := Filter{Netns: top.Router.Inode, Mark: 7, MarkMask: 0xff, Families: FamilyIPv6}
	if err := s.SetFilter(want); err != nil {
		t.Fatal(err)
	}
	if err := s.Enable(EnableConfig{}); err != nil {
		t.Fatal(err)
	}
	if st := sessionStats(t, s); st.Filter != want {
		t.Errorf("filter read back %+v", st.Filter)
	}
	for _, f := range families {
		conn := udpSocket(t, top.Client, f.Network)
		send(t, conn, netip.AddrPortFrom(f.RouterIn, port))
		send(t, conn, netip.AddrPortFrom(f.RouterIn, port+1))
	}
	d, _ := dc.find(5*time.Second, toPort(port+1))
	if d == nil || d.Family != NFProtoIPv6 || d.Mark != 7 {
		t.Fatalf("IPv6 drop with mark 7: %+v", d)
	}
	time.Sleep(300 * time.Millisecond)
	if n := dc.count(func(d *Drop) bool { return true }); n != 1 {
		t.Errorf("%d events, want the one the filter selects", n)
	}
}

// capsHelperEnv makes the test binary act as an unprivileged client: its
// value says how ("nobody", "no-net-admin", "no-sys-admin") and, after a
// colon, the session it tries to change.
const capsHelperEnv = "PKTFATE_KMOD_CAPS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(sessionHelperEnv) != "" {
		os.Exit(sessionHelper())
	}
	if v := os.Getenv(capsHelperEnv); v != "" {
		os.Exit(capsHelper(v))
	}
	os.Exit(m.Run())
}

// dropCap removes a capability from this thread's effective, permitted
// and inheritable sets.
func dropCap(c uint) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	data[c/32].Permitted &^= 1 << (c % 32)
	data[c/32].Inheritable &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// capsHelper runs every command and a session's creation without one
// capability (or as nobody, without all): each must fail with EPERM. The
// thread that drops it does all the netlink work (capabilities are per
// thread, and the socket remembers who opened it).
func capsHelper(v string) int {
	mode, target, _ := strings.Cut(v, ":")
	id64, _ := strconv.ParseUint(target, 10, 32)
	id := uint32(id64)
	runtime.LockOSThread()
	switch mode {
	case "no-net-admin":
		if err := dropCap(unix.CAP_NET_ADMIN); err != nil {
			fmt.Println("capset:", err)
			return 1
		}
	case "no-sys-admin":
		if err := dropCap(unix.CAP_SYS_ADMIN); err != nil {
			fmt.Println("capset:", err)
			return 1
		}
	}
	c, err := Dial()
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	rc := 0
	check := func(what string, err error, word string) {
		if errors.Is(err, unix.EPERM) && errors.Is(err, os.ErrPermission) && strings.Contains(err.Error(), word) {
			fmt.Printf("%s: EPERM\n", what)
			return
		}
		fmt.Printf("%s: %v, want EPERM naming %s\n", what, err, word)
		rc = 1
	}
	_, err = c.NewSession(SessionConfig{ReadBuffer: 1 << 16})
	check("SESSION_NEW", err, map[string]string{"no-sys-admin": "CAP_SYS_ADMIN"}[mode])
	if mode == "no-sys-admin" {
		return rc
	}
	other := &Session{c: c, id: id}
	check("ENABLE", other.Enable(EnableConfig{}), "CAP_NET_ADMIN")
	check("DISABLE", other.Disable(), "CAP_NET_ADMIN")
	check("SET_FILTER", other.SetFilter(Filter{Netns: 1}), "CAP_NET_ADMIN")
	_, err = other.Stats()
	check("GET_STATS", err, "CAP_NET_ADMIN")
	return rc
}

// TestKernelUnprivileged: a process running as nobody, one without
// CAP_NET_ADMIN and one without CAP_SYS_ADMIN cannot create a session,
// and the first two cannot change or read another's; the other's session
// stays enabled with its filter.
func TestKernelUnprivileged(t *testing.T) {
	c := kernelClient(t)
	s, _ := startSession(t, c, SessionConfig{Filter: Filter{Netns: 4242}}, &EnableConfig{})
	for _, c := range []struct {
		mode  string
		nobdy bool
		n     int
	}{{"nobody", true, 5}, {"no-net-admin", false, 5}, {"no-sys-admin", false, 1}} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", capsHelperEnv, c.mode, s.ID()))
		if c.nobdy {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		t.Logf("%s:\n%s", c.mode, out)
		if err != nil {
			t.Errorf("%s: %v", c.mode, err)
		}
		if n := strings.Count(string(out), ": EPERM"); n != c.n {
			t.Errorf("%s: %d of %d operations refused with EPERM", c.mode, n, c.n)
		}
	}
	st := sessionStats(t, s)
	if !st.Enabled || st.Filter != (Filter{Netns: 4242}) || st.Module.Sessions != 1 {
		t.Errorf("the session after the unprivileged attempts: %+v", st)
	}
}
