package pcapfilter

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestCorpusMatchesTcpdump compiles every expression of the corpus and
// compares the program with what tcpdump (libpcap) prints for an Ethernet
// capture: pktfate's filter language is exactly tcpdump's.
func TestCorpusMatchesTcpdump(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal("tcpdump is needed as the reference compiler (make deps installs it)")
	}
	for _, expr := range readLines(t, "../../testdata/filters/corpus.txt") {
		t.Run(expr, func(t *testing.T) {
			f, err := Compile(expr)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			fmt.Fprintf(&got, "%d\n", len(f.Program()))
			for _, in := range f.Program() {
				fmt.Fprintf(&got, "%d %d %d %d\n", in.Op, in.Jt, in.Jf, in.K)
			}
			out, err := exec.Command(tcpdump, "-y", "EN10MB", "-s", fmt.Sprint(CompileSnapLen), "-ddd", expr).Output()
			if err != nil {
				t.Fatalf("tcpdump -ddd %q: %v", expr, err)
			}
			if got.String() != string(out) {
				t.Errorf("program differs from tcpdump's:\ngot:\n%s\ntcpdump:\n%s", got.String(), out)
			}
		})
	}
}

func TestBadExpressions(t *testing.T) {
	for _, expr := range readLines(t, "../../testdata/filters/bad.txt") {
		f, err := Compile(expr)
		if err == nil {
			t.Errorf("Compile(%q) = %v, want an error", expr, f)
			continue
		}
		if !strings.Contains(err.Error(), expr) {
			t.Errorf("error %q does not name the expression %q", err, expr)
		}
	}
}

func TestEmptyMatchesAll(t *testing.T) {
	f, err := Compile("  ")
	if err != nil || f != nil {
		t.Fatalf("Compile(\"  \") = %v, %v; want nil, nil", f, err)
	}
	if !f.Match(0x0800, nil, false) {
		t.Error("nil filter must match")
	}
}

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if ip, ok := nl.(gopacket.NetworkLayer); ok {
					_ = n.SetNetworkLayerForChecksum(ip)
				}
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestMatch(t *testing.T) {
	ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: []byte{10, 0, 0, 1}, DstIP: []byte{10, 0, 0, 2}}
	udp4 := serialize(t, ip4, &layers.UDP{SrcPort: 40000, DstPort: 53}, gopacket.Payload("q"))
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
		SrcIP: []byte{0xfd, 0, 15: 1}, DstIP: []byte{0xfd, 0, 15: 2}}
	tcp6 := serialize(t, ip6, &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 100})
	ip6i := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: []byte{0xfd, 0, 15: 1}, DstIP: []byte{0xfd, 0, 15: 2}}
	icmp6 := serialize(t, ip6i, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, gopacket.Payload("ping"))

	type pkt struct {
		name string
		et   uint16
		data []byte
	}
	pkts := []pkt{{"udp4", 0x0800, udp4}, {"tcp6", 0x86dd, tcp6}, {"icmp6", 0x86dd, icmp6}}
	for _, tc := range []struct {
		expr string
		want []string // names of the packets that match
	}{
		{"udp", []string{"udp4"}},
		{"ip6", []string{"tcp6", "icmp6"}},
		{"icmp6", []string{"icmp6"}},
		{"udp port 53", []string{"udp4"}},
		{"portrange 400-500", []string{"tcp6"}},
		// libpcap's tcp[] indexes IPv4 only, as in tcpdump.
		{"tcp[tcpflags] & tcp-syn != 0", nil},
		{"ip6 and tcp dst port 443", []string{"tcp6"}},
		{"host 10.0.0.2", []string{"udp4"}},
		{"dst host fd00::2 and not tcp", []string{"icmp6"}},
		{"arp", nil},
	} {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range pkts {
			if f.Match(p.et, p.data, false) {
				got = append(got, p.name)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q matched %v, want %v", tc.expr, got, tc.want)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	f, err := Compile("udp port 53 or tcp port 443")
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 64)
	pkt[0] = 0x45
	pkt[9] = 17
	for b.Loop() {
		f.Match(0x0800, pkt, false)
	}
}
