package cbpf

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcap"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/testutil"
)

// Placeholder symbols of testdata/harness.c.
var symbols = map[Variant]string{L3: "pktfate_filter_l3", L2: "pktfate_filter_l2"}

var memlock sync.Once

func requireKernel(tb testing.TB) {
	tb.Helper()
	testutil.RequireRoot(tb)
	memlock.Do(func() {
		if err := rlimit.RemoveMemlock(); err != nil {
			tb.Logf("raising RLIMIT_MEMLOCK: %v", err)
		}
	})
}

// kernelFilter is the harness's test-run programs with one program's
// translations spliced in; it must be closed.
type kernelFilter struct {
	objs struct {
		RunL3 *ebpf.Program `ebpf:"run_l3"`
		RunL2 *ebpf.Program `ebpf:"run_l2"`
		Pkts  *ebpf.Map     `ebpf:"pkts"`
	}
	// insns is the length of each translation.
	insns map[Variant]int
}

// harnessWith returns the harness's spec with prog's translations spliced
// into the placeholders of every program.
func harnessWith(tb testing.TB, prog []bpf.RawInstruction) (*ebpf.CollectionSpec, map[Variant]int, error) {
	tb.Helper()
	spec, err := loadHarness()
	if err != nil {
		tb.Fatal(err)
	}
	sizes := make(map[Variant]int)
	for _, v := range []Variant{L3, L2} {
		insns, err := Translate(prog, v)
		if err != nil {
			return nil, nil, err
		}
		sizes[v] = len(insns)
		n, err := SpliceCollection(spec, symbols[v], insns)
		if err != nil {
			tb.Fatal(err)
		}
		if n != 3 { // run_*, bench_* and kfree_skb
			tb.Fatalf("spliced %s into %d programs, want 3", symbols[v], n)
		}
	}
	return spec, sizes, nil
}

func loadFilter(tb testing.TB, prog []bpf.RawInstruction) (*kernelFilter, error) {
	tb.Helper()
	spec, sizes, err := harnessWith(tb, prog)
	if err != nil {
		return nil, err
	}
	k := &kernelFilter{insns: sizes}
	if err := spec.LoadAndAssign(&k.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading the harness: %+v", ve)
		}
		return nil, fmt.Errorf("loading the harness: %w", err)
	}
	return k, nil
}

func (k *kernelFilter) Close() {
	k.objs.RunL3.Close()
	k.objs.RunL2.Close()
	k.objs.Pkts.Close()
}

// addr says how the harness passes the packet's address in R1.
type addr uint32

const (
	addrScalar  addr = 0    // a number, as skb->head + offset before 6.18
	addrPointer addr = 1    // the map value's pointer itself, as on 6.18
	addrBad     addr = 4096 // a user-space address: the read fails
)

// run runs the translated filter in the kernel on data (at most 512
// bytes), with R2 = R4 = len(data).
func (k *kernelFilter) run(v Variant, proto uint16, data []byte, a addr) (bool, error) {
	var p harnessPkt
	n := copy(p.Data[:], data)
	p.Len, p.Pktlen, p.Proto = uint32(n), uint32(n), uint32(proto)
	switch a {
	case addrPointer:
		p.Ptr = 1
	case addrBad:
		p.Bad = uint32(addrBad)
	}
	if err := k.objs.Pkts.Put(uint32(0), &p); err != nil {
		return false, err
	}
	prog := k.objs.RunL3
	if v == L2 {
		prog = k.objs.RunL2
	}
	ret, err := prog.Run(&ebpf.RunOptions{})
	if err != nil {
		return false, err
	}
	if ret > 1 {
		return false, fmt.Errorf("filter returned %d, want 0 or 1", ret)
	}
	return ret == 1, nil
}

func compile(tb testing.TB, expr string) *pcapfilter.Filter {
	tb.Helper()
	f, err := pcapfilter.Compile(expr)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// view is the bytes of p a variant's filter sees, cut to n (n < 0: all)
// and to MaxLen.
func view(p testPacket, v Variant, n int) []byte {
	data := p.l3
	if v == L2 {
		data = p.l2
	}
	if n >= 0 && n < len(data) {
		data = data[:n]
	}
	if len(data) > MaxLen {
		data = data[:MaxLen]
	}
	return data
}

// captureLengths cut the test packets at and around every header
// boundary. Inside the kernel matrix's VMs (QEMU TCG, ten times slower) a
// subset does: what differs between kernels is the verifier and the JIT,
// which every length exercises alike.
func captureLengths() []int {
	if testutil.InVM() != "" {
		return []int{-1, 0, 13, 14, 20, 23, 34, 38, 40, 54, 57}
	}
	return []int{-1, 0, 1, 2, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 26, 33, 34, 35, 36, 37, 38, 40, 41, 42, 47, 48, 53, 54, 55, 56, 57, 58, 60, 62, 64, 70}
}

// TestVerifierAcceptsCorpus loads every corpus expression's translations,
// in both variants, into the running kernel.
func TestVerifierAcceptsCorpus(t *testing.T) {
	requireKernel(t)
	for _, expr := range expressions(t) {
		f := compile(t, expr)
		k, err := loadFilter(t, f.Program())
		if err != nil {
			t.Errorf("%q: %v", expr, err)
			continue
		}
		var verified []string
		for _, v := range []Variant{L3, L2} {
			prog := k.objs.RunL3
			if v == L2 {
				prog = k.objs.RunL2
			}
			info, err := prog.Info()
			if err != nil {
				t.Fatal(err)
			}
			n, _ := info.VerifiedInstructions()
			verified = append(verified, fmt.Sprintf("%s %d insns, %d verified", v, k.insns[v], n))
		}
		t.Logf("%-60q classic %3d: %s", expr, len(f.Program()), strings.Join(verified, ", "))
		k.Close()
	}
}

// TestKernelMatchesUserSpace runs every corpus expression's translations in
// the kernel on every test packet, cut at many capture lengths, in both
// variants, and compares each verdict with pcapfilter's (libpcap's program
// in golang.org/x/net/bpf).
func TestKernelMatchesUserSpace(t *testing.T) {
	requireKernel(t)
	pkts := testPackets(t)
	runs, matches := 0, 0
	lengths := captureLengths()
	for _, expr := range expressions(t) {
		f := compile(t, expr)
		k, err := loadFilter(t, f.Program())
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		exprMatches := 0
		for i, p := range pkts {
			a := addrScalar
			if i%2 == 1 {
				a = addrPointer
			}
			for _, v := range []Variant{L3, L2} {
				for _, n := range lengths {
					data := view(p, v, n)
					want := f.Match(p.etherType, data, v == L2)
					got, err := k.run(v, p.etherType, data, a)
					if err != nil {
						t.Fatal(err)
					}
					runs++
					if got {
						exprMatches++
					}
					if got != want {
						t.Errorf("%q, %s, %s cut to %d: kernel %v, user space %v", expr, v, p.name, len(data), got, want)
					}
				}
			}
		}
		if exprMatches == 0 && !strings.Contains(expr, "greater") {
			t.Errorf("%q matched no test packet: add one it matches", expr)
		}
		matches += exprMatches
		k.Close()
	}
	t.Logf("%d kernel runs, %d matches", runs, matches)
}

// TestKernelUnreadableAddress checks a failed read in the kernel counts
// as no bytes, as it does in user space.
func TestKernelUnreadableAddress(t *testing.T) {
	requireKernel(t)
	pkts := testPackets(t)
	for _, expr := range []string{"ip", "udp port 53", "arp", "len > 10", "not tcp"} {
		f := compile(t, expr)
		k, err := loadFilter(t, f.Program())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			for _, v := range []Variant{L3, L2} {
				// A user-space address: bpf_probe_read_kernel refuses it.
				got, err := k.run(v, p.etherType, view(p, v, -1), addrBad)
				if err != nil {
					t.Fatal(err)
				}
				// The bytes are gone but len still says how many there were.
				want := f.Match(p.etherType, nil, v == L2)
				if strings.HasPrefix(expr, "len") {
					want = true
				}
				if got != want {
					t.Errorf("%q, %s, %s, unreadable: kernel %v, want %v", expr, v, p.name, got, want)
				}
			}
		}
		k.Close()
	}
}

// TestKernelNeg checks libpcap's negation, which golang.org/x/net/bpf (and
// so pcapfilter's user-space Match) cannot run.
func TestKernelNeg(t *testing.T) {
	requireKernel(t)
	f := compile(t, "ip and -ip[8] = 4294967232") // TTL 64
	k, err := loadFilter(t, f.Program())
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	for _, p := range testPackets(t) {
		want := p.etherType == 0x0800 && len(p.l3) > 8 && p.l3[8] == 64
		for _, v := range []Variant{L3, L2} {
			got, err := k.run(v, p.etherType, view(p, v, -1), addrScalar)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s, %s: got %v, want %v", v, p.name, got, want)
			}
		}
	}
}

// TestProtochainUnsupported: protochain loops with a backward jump, which
// the translation refuses (and pcapfilter cannot run either).
func TestProtochainUnsupported(t *testing.T) {
	insns, err := pcap.CompileBPFFilter(layers.LinkTypeEthernet, pcapfilter.CompileSnapLen, "ip6 protochain 6")
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]bpf.RawInstruction, len(insns))
	for i, in := range insns {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	for _, v := range []Variant{L3, L2} {
		if _, err := Translate(raw, v); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", v, err)
		}
	}
}

// TestTracepoint runs translated filters where pktfate will: in a
// tp_btf/kfree_skb program, on the drops of UDP datagrams sent to closed
// ports in a fresh network namespace. Only those to port 9999 match.
func TestTracepoint(t *testing.T) {
	requireKernel(t)
	ns := testutil.NewNS(t)
	f := compile(t, "udp dst port 9999")
	spec, _, err := harnessWith(t, f.Program())
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["want_netns"].Set(ns.Inode); err != nil {
		t.Fatal(err)
	}
	var objs struct {
		KfreeSkb *ebpf.Program `ebpf:"kfree_skb"`
		Hits     *ebpf.Map     `ebpf:"hits"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("loading kfree_skb: %+v", ve)
		}
		t.Fatal(err)
	}
	defer objs.KfreeSkb.Close()
	defer objs.Hits.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: objs.KfreeSkb})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	const each = 5
	sent := 0
	err = ns.Do(func() error {
		for _, network := range []string{"udp4", "udp6"} {
			host := "127.0.0.1"
			if network == "udp6" {
				host = "::1"
			}
			c, err := net.ListenPacket(network, net.JoinHostPort(host, "0"))
			if err != nil {
				return err
			}
			defer c.Close()
			for _, port := range []string{"9999", "9998"} {
				dst, err := net.ResolveUDPAddr(network, net.JoinHostPort(host, port))
				if err != nil {
					return err
				}
				for i := 0; i < each; i++ {
					if _, err := c.WriteTo([]byte("pktfate"), dst); err != nil {
						return err
					}
					sent++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hits := func() [4]uint64 {
		var h [4]uint64
		for k := range h {
			if err := objs.Hits.Lookup(uint32(k), &h[k]); err != nil {
				t.Fatal(err)
			}
		}
		return h
	}
	deadline := time.Now().Add(5 * time.Second)
	for hits()[0] < uint64(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h := hits()
	want := uint64(2 * each) // port 9999, over IPv4 and IPv6
	if h[0] < uint64(sent) || h[2] < uint64(sent) {
		t.Fatalf("saw %d drops (%d with a MAC header), want at least the %d datagrams sent", h[0], h[2], sent)
	}
	if h[1] != want || h[3] != want {
		t.Errorf("L3 filter matched %d, L2 %d; want %d each (of %d drops)", h[1], h[3], want, h[0])
	}
}

// benchPackets are the packets the benchmarks run on, by name.
func benchPacket(tb testing.TB, name string) testPacket {
	for _, p := range testPackets(tb) {
		if p.name == name {
			return p
		}
	}
	tb.Fatalf("no test packet %q", name)
	return testPacket{}
}

// BenchmarkKernelFilter measures a translated filter's cost in the kernel:
// one BPF_PROG_TEST_RUN runs it 1000 times (bpf_loop), and ns/filter is
// the kernel's run-time statistics (bpf_stats) divided by the runs. "ret #1" is the harness's own cost per run (the loop,
// the call); "ldb [14]" adds the smallest read, about what one
// bpf_probe_read_kernel per classic load would cost each load.
func BenchmarkKernelFilter(b *testing.B) {
	requireKernel(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enabling BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	const loops = 1000
	cases := []struct {
		expr       string
		match      string // a packet it matches
		miss       string // a packet it does not
		classicRaw []bpf.RawInstruction
	}{
		{expr: "ret #1", match: "udp4 dns", classicRaw: []bpf.RawInstruction{{Op: clsRET | retK, K: 1}}},
		{expr: "ldb [14]", match: "udp4 dns", classicRaw: []bpf.RawInstruction{{Op: clsLD | szB | modeABS, K: 14}, {Op: clsRET | retK, K: 1}}},
		{expr: "udp port 53", match: "udp4 dns", miss: "tcp4 syn"},
		{expr: "udp port 53", miss: "arp request"},
		{expr: "tcp[tcpflags] & tcp-syn != 0", match: "tcp4 syn", miss: "udp4 dns"},
		{expr: "host 10.0.0.1 and not port 22", match: "udp4 dns", miss: "udp6 dns"},
		{expr: "ip6 and tcp dst port 443", match: "tcp6 syn", miss: "udp6 dns"},
		{expr: "portrange 1-1024", match: "udp4 discard", miss: "udp4 high"},
	}
	for _, c := range cases {
		prog := c.classicRaw
		if prog == nil {
			prog = compile(b, c.expr).Program()
		}
		spec, _, err := harnessWith(b, prog)
		if err != nil {
			b.Fatal(err)
		}
		var objs struct {
			BenchL3 *ebpf.Program `ebpf:"bench_l3"`
			BenchL2 *ebpf.Program `ebpf:"bench_l2"`
			Pkts    *ebpf.Map     `ebpf:"pkts"`
		}
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			b.Fatal(err)
		}
		for _, pc := range []struct {
			what, name string
			want       uint32
		}{{"match", c.match, loops}, {"miss", c.miss, 0}} {
			if pc.name == "" {
				continue
			}
			p := benchPacket(b, pc.name)
			for _, v := range []Variant{L3, L2} {
				b.Run(fmt.Sprintf("%s/%s/%s/%s", c.expr, pc.what, strings.ReplaceAll(pc.name, " ", "_"), v), func(b *testing.B) {
					var hp harnessPkt
					data := view(p, v, 128)
					n := copy(hp.Data[:], data)
					hp.Len, hp.Pktlen, hp.Proto, hp.Loops = uint32(n), uint32(n), uint32(p.etherType), loops
					if err := objs.Pkts.Put(uint32(0), &hp); err != nil {
						b.Fatal(err)
					}
					prog := objs.BenchL3
					if v == L2 {
						prog = objs.BenchL2
					}
					before, err := prog.Stats()
					if err != nil {
						b.Fatal(err)
					}
					for b.Loop() {
						if _, err := prog.Run(&ebpf.RunOptions{}); err != nil {
							b.Fatal(err)
						}
					}
					after, err := prog.Stats()
					if err != nil {
						b.Fatal(err)
					}
					// The kernel's own accounting of the program's run time
					// leaves out the syscalls and the time the benchmark's
					// thread waits for a CPU.
					runs := after.RunCount - before.RunCount
					if runs != uint64(b.N) {
						b.Fatalf("the kernel counted %d runs, want %d", runs, b.N)
					}
					b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(runs*loops), "ns/filter")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*loops), "wall-ns/filter")
					b.ReportMetric(0, "ns/op")
					if err := objs.Pkts.Lookup(uint32(0), &hp); err != nil {
						b.Fatal(err)
					}
					if hp.Matches != pc.want {
						b.Fatalf("%d of %d runs matched, want %d", hp.Matches, loops, pc.want)
					}
				})
			}
		}
		objs.BenchL3.Close()
		objs.BenchL2.Close()
		objs.Pkts.Close()
	}
}

// TestKernelLargeExpression loads long expressions (hundreds of classic
// instructions, thousands translated): the verifier's complexity limit and
// eBPF's jump range must hold, and the verdicts stay right.
func TestKernelLargeExpression(t *testing.T) {
	requireKernel(t)
	var ports, hosts []string
	for i := 1; i <= 120; i++ {
		ports = append(ports, fmt.Sprintf("port %d", 1000+i))
	}
	for i := 1; i <= 60; i++ {
		hosts = append(hosts, fmt.Sprintf("host 10.0.%d.%d", i/8, i))
	}
	// Every term loads another offset: the translation grows with each.
	var fields []string
	for i := 0; i < 150; i++ {
		fields = append(fields, fmt.Sprintf("(ip[%d:2] = %d and udp[%d] != %d)", i%40, 1000+i, i%30, i))
	}
	pkts := testPackets(t)
	for _, expr := range []string{
		strings.Join(ports, " or ") + " or port 53",
		strings.Join(hosts, " or ") + " or host 10.0.0.1",
		"(" + strings.Join(ports[:40], " or ") + " or port 1234) and not (" + strings.Join(hosts[:20], " or ") + ")",
		strings.Join(fields, " or ") + " or ip[2:2] > 40",
	} {
		f := compile(t, expr)
		k, err := loadFilter(t, f.Program())
		if err != nil {
			t.Fatalf("%d classic instructions: %v", len(f.Program()), err)
		}
		t.Logf("%d classic instructions: L3 %d, L2 %d translated", len(f.Program()), k.insns[L3], k.insns[L2])
		matched := 0
		for _, p := range pkts {
			for _, v := range []Variant{L3, L2} {
				data := view(p, v, -1)
				got, err := k.run(v, p.etherType, data, addrScalar)
				if err != nil {
					t.Fatal(err)
				}
				if want := f.Match(p.etherType, data, v == L2); got != want {
					t.Errorf("%.40q..., %s, %s: kernel %v, user space %v", expr, v, p.name, got, want)
				}
				if got {
					matched++
				}
			}
		}
		if matched == 0 {
			t.Errorf("%.40q... matched no test packet", expr)
		}
		k.Close()
	}
}
