package tracer

// Recorded ring-buffer records: the fixture format, its reader (exported to
// package tracer_test) and the recorder that captures them with the real BPF
// program on the running kernel (go test ./tracer -run TestRecordFixtures -update).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/internal/testutil"
)

// Update regenerates fixtures and golden files instead of comparing with them.
var Update = flag.Bool("update", false, "regenerate testdata (records need root and the kernel named in testdata/records/records.json)")

// Paths of the shared fixtures, relative to this package.
const (
	RecordsDir       = "../testdata/records"
	RecordsManifest  = RecordsDir + "/records.json"
	RecordsKallsyms  = "../testdata/kallsyms/6.18-records.txt"
	RecordsBTF       = "../testdata/btf/6.18.btf"
	RecordsClockBase = int64(1_790_000_000_000_000_000) // FixedClock offset the tests decode with
)

// RecordManifest describes the recorded records: where they come from and
// what each one must decode to.
type RecordManifest struct {
	Kernel   string         `json:"kernel"`
	Recorded string         `json:"recorded"`
	Note     string         `json:"note"`
	Records  []RecordedWant `json:"records"`
}

// RecordedWant is one record: the scenario that produced it, its file and
// the event it decodes to with the fixtures' reasons and symbols.
type RecordedWant struct {
	Name     string `json:"name"`
	Scenario string `json:"scenario"`
	File     string `json:"file"`

	Kind         uint8  `json:"kind"`
	Flags        uint8  `json:"flags"`
	Fate         string `json:"fate"`
	Reason       string `json:"reason,omitempty"`
	ReasonCode   uint32 `json:"reason_code"`
	Location     string `json:"location"`
	LocationAddr uint64 `json:"location_addr"`
	Mono         uint64 `json:"mono"`
	CPU          uint32 `json:"cpu"`
	Skb          uint64 `json:"skb"`
	Netns        uint32 `json:"netns"`
	Ifindex      uint32 `json:"ifindex"`
	Ifname       string `json:"ifname"`
	Mark         uint32 `json:"mark"`
	Len          uint32 `json:"len"`
	EtherType    uint16 `json:"ethertype"`
	CapLen       int    `json:"cap_len"`
	MACHeader    bool   `json:"mac_header"`

	Proto      string     `json:"proto"`
	Src        netip.Addr `json:"src"`
	Dst        netip.Addr `json:"dst"`
	Sport      uint16     `json:"sport"`
	Dport      uint16     `json:"dport"`
	ICMPType   uint8      `json:"icmp_type"`
	ICMPCode   uint8      `json:"icmp_code"`
	TCPFlags   uint8      `json:"tcp_flags"`
	PayloadLen int        `json:"payload_len"`
}

// LoadRecords reads the manifest and every record's bytes, by name.
func LoadRecords(tb testing.TB, dir string) (*RecordManifest, map[string][]byte) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "records.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m RecordManifest
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("records.json: %v", err)
	}
	raw := map[string][]byte{}
	for _, r := range m.Records {
		raw[r.Name] = ReadHexRecord(tb, filepath.Join(dir, r.File))
	}
	return &m, raw
}

// ReadHexRecord reads a record written by writeHexRecord: hex bytes,
// whitespace ignored, '#' starts a comment.
func ReadHexRecord(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		h := strings.Join(strings.Fields(line), "")
		b, err := hex.DecodeString(h)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		out = append(out, b...)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// writeHexRecord writes raw as 16 hex bytes a line, commented with the
// field each header line holds.
func writeHexRecord(path, title string, raw []byte) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n# %d bytes: struct event (bpf/skbfate.c) of the ring buffer, as ringbuf.Record.RawSample\n", title, len(raw))
	comments := map[int]string{
		0: "ts, skb", 16: "location, head", 32: "reason, netns, ifindex, iif", 48: "mark, len, cpu, protocol, cap_len",
		64: "flags, kind, nf_hook, nf_pf, sk_family, netns_from, if_from, ifname[0:8]", 80: "ifname[8:16], data[0:8]",
	}
	for off := 0; off < len(raw); off += 16 {
		end := min(off+16, len(raw))
		var line []string
		for i := off; i < end; i++ {
			line = append(line, hex.EncodeToString(raw[i:i+1]))
		}
		s := strings.Join(line, " ")
		if c, ok := comments[off]; ok {
			s = fmt.Sprintf("%-47s  # %s", s, c)
		}
		b.WriteString(s + "\n")
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// recordScenario sends traffic in ns and picks the record it is about.
type recordScenario struct {
	name, title string
	send        func(ns *netns.NS) (src, dst netip.AddrPort, err error)
	match       func(e *fate.Event, src, dst netip.AddrPort) bool
}

func udpToClosedPort(network string, dst netip.AddrPort) func(*netns.NS) (netip.AddrPort, netip.AddrPort, error) {
	return func(ns *netns.NS) (netip.AddrPort, netip.AddrPort, error) {
		var conn *net.UDPConn
		if err := ns.Do(func() error {
			var err error
			conn, err = net.ListenUDP(network, &net.UDPAddr{IP: dst.Addr().AsSlice()})
			return err
		}); err != nil {
			return netip.AddrPort{}, dst, err
		}
		defer conn.Close()
		_, err := conn.WriteToUDPAddrPort([]byte("pktfate"), dst)
		return conn.LocalAddr().(*net.UDPAddr).AddrPort(), dst, err
	}
}

func tcpSynToClosedPort(ns *netns.NS) (netip.AddrPort, netip.AddrPort, error) {
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	src := netip.MustParseAddrPort("127.0.0.1:40009")
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: time.Second, LocalAddr: net.TCPAddrFromAddrPort(src)}
		c, err := d.Dial("tcp4", dst.String())
		if err == nil {
			c.Close()
			return errors.New("connected to a closed port")
		}
		if !errors.Is(err, unix.ECONNREFUSED) {
			return err
		}
		return nil
	})
	return src, dst, err
}

func icmpEcho(ns *netns.NS) (netip.AddrPort, netip.AddrPort, error) {
	dst := netip.MustParseAddrPort("127.0.0.1:0")
	err := ns.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "127.0.0.1")
		if err != nil {
			return err
		}
		defer c.Close()
		// Echo request, id 0x7066 ("pf"), sequence 1, payload "pktfate".
		msg := []byte{8, 0, 0, 0, 0x70, 0x66, 0, 1, 'p', 'k', 't', 'f', 'a', 't', 'e'}
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			v := uint32(msg[i]) << 8
			if i+1 < len(msg) {
				v |= uint32(msg[i+1])
			}
			sum += v
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.Addr().AsSlice()}); err != nil {
			return err
		}
		// Wait for the reply so both have passed the tracepoints.
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 128)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("no echo reply: %w", err)
			}
			if n >= 8 && buf[0] == 0 {
				return nil
			}
		}
	})
	return dst, dst, err
}

func recordScenarios() []recordScenario {
	udpDrop := func(e *fate.Event, src, dst netip.AddrPort) bool {
		return e.Fate == fate.FateDrop && e.Packet.Proto == "udp" &&
			netip.AddrPortFrom(e.Packet.Src, e.Packet.Sport) == src &&
			netip.AddrPortFrom(e.Packet.Dst, e.Packet.Dport) == dst
	}
	return []recordScenario{
		{
			name:  "udp4-closed-port",
			title: "UDP 127.0.0.1:<ephemeral> > 127.0.0.1:9 \"pktfate\" (closed port): kfree_skb NO_SOCKET",
			send:  udpToClosedPort("udp4", netip.MustParseAddrPort("127.0.0.1:9")),
			match: udpDrop,
		},
		{
			name:  "udp6-closed-port",
			title: "UDP [::1]:<ephemeral> > [::1]:9 \"pktfate\" (closed port): kfree_skb NO_SOCKET",
			send:  udpToClosedPort("udp6", netip.MustParseAddrPort("[::1]:9")),
			match: udpDrop,
		},
		{
			name:  "tcp4-syn-closed-port",
			title: "TCP SYN 127.0.0.1:40009 > 127.0.0.1:9 (closed port): kfree_skb NO_SOCKET",
			send:  tcpSynToClosedPort,
			match: func(e *fate.Event, src, dst netip.AddrPort) bool {
				return e.Fate == fate.FateDrop && e.Packet.Proto == "tcp" && e.Packet.TCPFlags == 0x02 &&
					netip.AddrPortFrom(e.Packet.Src, e.Packet.Sport) == src &&
					netip.AddrPortFrom(e.Packet.Dst, e.Packet.Dport) == dst
			},
		},
		{
			name:  "icmp4-echo-request",
			title: "ICMP echo request 127.0.0.1 > 127.0.0.1 answered by the kernel: consume_skb in icmp_rcv",
			send:  icmpEcho,
			match: func(e *fate.Event, _, dst netip.AddrPort) bool {
				return e.Fate == fate.FateConsume && e.Packet.Proto == "icmp" && e.Packet.ICMPType == 8 &&
					e.Packet.Dst == dst.Addr() && fate.Function(e.Location) == "icmp_rcv"
			},
		},
	}
}

// TestRecordFixtures captures one raw ring-buffer record per scenario with
// the real BPF program, in a fresh network namespace, and writes
// testdata/records (records and manifest) and the kallsyms lines the
// records' locations need. It runs only with -update.
func TestRecordFixtures(t *testing.T) {
	if !*Update {
		t.Skip("regenerates testdata/records: run as root with -update on the kernel the fixtures are for")
	}
	testutil.RequireRoot(t)
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	kernel := unix.ByteSliceToString(uts.Release[:])
	if !strings.HasPrefix(kernel, "6.18.") {
		t.Fatalf("running kernel %s: the records are named 6.18 (testdata/kallsyms/6.18-records.txt, testdata/btf/6.18.btf); rename them first", kernel)
	}
	live, err := DefaultDecoder(mustKernelBTF(t))
	if err != nil {
		t.Fatal(err)
	}
	if live.Symbols == nil {
		t.Fatal("cannot read /proc/kallsyms: locations would not be named")
	}
	// The stored reasons must name codes as the running kernel does.
	fixtureReasons := mustReasons(t, RecordsBTF)

	manifest := RecordManifest{
		Kernel:   kernel,
		Recorded: time.Now().UTC().Format(time.DateOnly),
		Note:     "written by go test ./tracer -run TestRecordFixtures -update; expected values decoded at capture time and checked against what the sender knows",
	}
	var locations []uint64
	for _, sc := range recordScenarios() {
		ns := testutil.NewNS(t)
		raw, ev := captureRecord(t, ns, live, sc)
		if got := fixtureReasons.Name(ev.ReasonCode); ev.Fate == fate.FateDrop && got != ev.Reason {
			t.Fatalf("%s: %s names reason %d %q, the kernel %q: regenerate it", sc.name, RecordsBTF, ev.ReasonCode, got, ev.Reason)
		}
		// What the sender knows independently of the decoder.
		if ev.Netns != ns.Inode || ev.Ifname != "lo" || ev.Ifindex != 1 {
			t.Fatalf("%s: netns %d ifname %q ifindex %d, want %d lo 1", sc.name, ev.Netns, ev.Ifname, ev.Ifindex, ns.Inode)
		}
		if ev.Fate == fate.FateDrop && ev.Reason != "NO_SOCKET" {
			t.Fatalf("%s: reason %s, want NO_SOCKET", sc.name, ev.Reason)
		}
		file := sc.name + ".hex"
		if err := writeHexRecord(filepath.Join(RecordsDir, file), sc.title, raw); err != nil {
			t.Fatal(err)
		}
		locations = append(locations, ev.LocationAddr)
		manifest.Records = append(manifest.Records, wantFromEvent(sc, file, raw, ev))
	}
	b, err := json.MarshalIndent(manifest, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(RecordsManifest, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeKallsymsSubset(RecordsKallsyms, locations); err != nil {
		t.Fatal(err)
	}
}

func wantFromEvent(sc recordScenario, file string, raw []byte, ev *fate.Event) RecordedWant {
	return RecordedWant{
		Name: sc.name, Scenario: sc.title, File: file,
		Kind: raw[ringrec.OffKind], Flags: raw[ringrec.OffFlags],
		Fate: ev.Fate.String(), Reason: ev.Reason, ReasonCode: ev.ReasonCode,
		Location: ev.Location, LocationAddr: ev.LocationAddr,
		Mono: ev.Mono, CPU: ev.CPU, Skb: ev.Skb,
		Netns: ev.Netns, Ifindex: ev.Ifindex, Ifname: ev.Ifname, Mark: ev.Mark, Len: ev.Len,
		EtherType: ev.EtherType, CapLen: len(ev.Data), MACHeader: ev.MACHeader,
		Proto: ev.Packet.Proto, Src: ev.Packet.Src, Dst: ev.Packet.Dst,
		Sport: ev.Packet.Sport, Dport: ev.Packet.Dport,
		ICMPType: ev.Packet.ICMPType, ICMPCode: ev.Packet.ICMPCode,
		TCPFlags: ev.Packet.TCPFlags, PayloadLen: ev.Packet.PayloadLen,
	}
}

func mustKernelBTF(t *testing.T) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func mustReasons(t *testing.T, path string) *Reasons {
	t.Helper()
	spec, err := btf.LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReasonsFromBTF(spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// captureRecord starts the ebpf source filtered to ns, runs the scenario and
// returns a copy of the first raw record it matches.
func captureRecord(t *testing.T, ns *netns.NS, live *Decoder, sc recordScenario) ([]byte, *fate.Event) {
	t.Helper()
	src := NewEBPF(EBPFConfig{Drops: true, Consumes: true, FilterNetns: ns.Inode, Decoder: live})
	defer src.Close()
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	from, to, err := sc.send(ns)
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var seen []string
	var raw []byte
	var found *fate.Event
	for ctx.Err() == nil && found == nil {
		_, err := src.ring.drain(func(sample []byte) {
			var ev fate.Event
			if err := live.Decode(sample, &ev); err != nil {
				t.Errorf("%s: live record does not decode: %v", sc.name, err)
				return
			}
			if found == nil && sc.match(&ev, from, to) {
				raw, found = slices.Clone(sample), ev.Clone()
				return
			}
			seen = append(seen, fmt.Sprintf("%s %s %s %+v", ev.Fate, ev.Reason, ev.Location, ev.Packet))
		})
		if err != nil {
			t.Fatal(err)
		}
		if found == nil {
			src.ring.wait(100 * time.Millisecond)
		}
	}
	if found != nil {
		return raw, found
	}
	t.Fatalf("%s: no matching record among %d:\n%s", sc.name, len(seen), strings.Join(seen, "\n"))
	return nil, nil
}

// writeKallsymsSubset copies from /proc/kallsyms the lines of the symbols
// containing addrs, the symbol after each (so the fixture also bounds it),
// sorted by address.
func writeKallsymsSubset(path string, addrs []uint64) error {
	b, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		return err
	}
	type line struct {
		addr uint64
		text string
	}
	var lines []line
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || !strings.ContainsAny(f[1], "tTwW") {
			continue
		}
		var a uint64
		if _, err := fmt.Sscanf(f[0], "%x", &a); err != nil {
			return err
		}
		lines = append(lines, line{a, l})
	}
	slices.SortStableFunc(lines, func(a, b line) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	keep := map[int]bool{}
	for _, a := range addrs {
		i, found := slices.BinarySearchFunc(lines, a, func(l line, a uint64) int {
			switch {
			case l.addr < a:
				return -1
			case l.addr > a:
				return 1
			}
			return 0
		})
		if !found {
			i--
		}
		if i < 0 {
			return fmt.Errorf("address %#x is below every kernel symbol", a)
		}
		keep[i] = true
		if i+1 < len(lines) {
			keep[i+1] = true
		}
	}
	// No comment line: the fixture is in /proc/kallsyms format only.
	var out strings.Builder
	for i, l := range lines {
		if keep[i] {
			out.WriteString(l.text + "\n")
		}
	}
	return os.WriteFile(path, []byte(out.String()), 0o644)
}

// TestEventLayout checks the offsets the decoder reads against struct event
// in the BPF object's own BTF (what clang laid out) and against the numbers
// the black-box tests use.
func TestEventLayout(t *testing.T) {
	spec, err := loadSkbfate()
	if err != nil {
		t.Fatal(err)
	}
	var st *btf.Struct
	if err := spec.Types.TypeByName("event", &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != uint32(unsafe.Sizeof(skbfateEvent{})) {
		t.Errorf("struct event is %d bytes in BPF, %d in Go", st.Size, unsafe.Sizeof(skbfateEvent{}))
	}
	want := map[string]struct{ got, abi uintptr }{
		"ts": {ringrec.OffTs, 0}, "skb": {ringrec.OffSkb, 8}, "location": {ringrec.OffLocation, 16}, "head": {ringrec.OffHead, 24},
		"reason": {ringrec.OffReason, 32}, "netns": {ringrec.OffNetns, 36}, "ifindex": {ringrec.OffIfindex, 40}, "iif": {ringrec.OffIif, 44},
		"mark": {ringrec.OffMark, 48}, "len": {ringrec.OffLen, 52}, "cpu": {ringrec.OffCPU, 56}, "protocol": {ringrec.OffProtocol, 60},
		"cap_len": {ringrec.OffCapLen, 62}, "flags": {ringrec.OffFlags, 64}, "kind": {ringrec.OffKind, 66}, "nf_hook": {ringrec.OffNfHook, 67},
		"nf_pf": {ringrec.OffNfPf, 68}, "sk_family": {ringrec.OffSkFamily, 69}, "netns_from": {ringrec.OffNetnsFrom, 70},
		"if_from": {ringrec.OffIfFrom, 71}, "ifname": {ringrec.OffIfname, 72}, "data": {ringrec.OffData, 88},
	}
	seen := 0
	for _, m := range st.Members {
		w, ok := want[m.Name]
		if !ok {
			continue
		}
		seen++
		if uintptr(m.Offset.Bytes()) != w.got || w.got != w.abi {
			t.Errorf("%s: BPF offset %d, decoder %d, tests %d", m.Name, m.Offset.Bytes(), w.got, w.abi)
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of %d members in the BPF struct event", seen, len(want))
	}
	if MaxSnapLen != 256 {
		t.Errorf("MaxSnapLen = %d, want SNAP_MAX 256", MaxSnapLen)
	}
}
