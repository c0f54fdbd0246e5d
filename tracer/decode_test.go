package tracer_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/tracer"
)

// Layout of struct event in bpf/skbfate.c, written out by hand so that the
// tests check the decoder against the C struct, not against itself
// (TestEventLayout checks these against the BPF object's BTF).
const (
	rawHead      = 24
	rawReason    = 32
	rawNetns     = 36
	rawIfindex   = 40
	rawIif       = 44
	rawLen       = 52
	rawProtocol  = 60
	rawCapLen    = 62
	rawFlags     = 64 // u16, little endian: the low byte first
	rawKind      = 66
	rawNfHook    = 67
	rawNfPf      = 68
	rawSkFamily  = 69
	rawNetnsFrom = 70
	rawIfFrom    = 71
	rawIfname    = 72
	rawData      = 88

	evfNetwork     = 1 << 0
	evfMAC         = 1 << 1
	evfHasLocation = 1 << 2
	evfNF          = 1 << 3
	evfCloned      = 1 << 5
	evfShared      = 1 << 6
	evfNotPacket   = 1 << 7
)

func loadReasons(tb testing.TB, kernel string) *tracer.Reasons {
	tb.Helper()
	spec, err := btf.LoadSpec("../testdata/btf/" + kernel + ".btf")
	if err != nil {
		tb.Fatal(err)
	}
	r, err := tracer.ReasonsFromBTF(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func loadSymbols(tb testing.TB, path string) *tracer.Symbols {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s, err := tracer.ParseKallsyms(f)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// fixtureDecoder decodes as on the host the records come from, from
// fixtures only.
func fixtureDecoder(tb testing.TB) *tracer.Decoder {
	return tracer.NewDecoder(loadReasons(tb, "6.18"), loadSymbols(tb, tracer.RecordsKallsyms), tracer.FixedClock(tracer.RecordsClockBase))
}

func TestDecodeRecords(t *testing.T) {
	m, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	if len(m.Records) < 4 {
		t.Fatalf("manifest lists %d records, want at least 4", len(m.Records))
	}
	d := fixtureDecoder(t)
	for _, w := range m.Records {
		t.Run(w.Name, func(t *testing.T) {
			raw := raws[w.Name]
			var ev fate.Event
			if err := d.Decode(raw, &ev); err != nil {
				t.Fatal(err)
			}
			checkEvent(t, &ev, w, raw)
		})
	}
	// One Decoder and one Event reused across records of different
	// protocols: nothing of a previous packet may stay behind.
	var ev fate.Event
	for range 2 {
		for _, w := range m.Records {
			if err := d.Decode(raws[w.Name], &ev); err != nil {
				t.Fatal(err)
			}
			checkEvent(t, &ev, w, raws[w.Name])
		}
	}
}

func checkEvent(t *testing.T, ev *fate.Event, w tracer.RecordedWant, raw []byte) {
	t.Helper()
	check := func(field string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %s = %v, want %v", w.Name, field, got, want)
		}
	}
	check("source", ev.Source, "ebpf")
	check("fate", ev.Fate.String(), w.Fate)
	check("reason", ev.Reason, w.Reason)
	check("reason code", ev.ReasonCode, w.ReasonCode)
	check("location", ev.Location, w.Location)
	check("location address", ev.LocationAddr, w.LocationAddr)
	check("mono", ev.Mono, w.Mono)
	check("time", ev.Time.UnixNano(), int64(w.Mono)+tracer.RecordsClockBase)
	check("cpu", ev.CPU, w.CPU)
	check("skb", ev.Skb, w.Skb)
	check("netns", ev.Netns, w.Netns)
	check("ifindex", ev.Ifindex, w.Ifindex)
	check("ifname", ev.Ifname, w.Ifname)
	check("mark", ev.Mark, w.Mark)
	check("len", ev.Len, w.Len)
	check("ethertype", ev.EtherType, w.EtherType)
	check("mac header", ev.MACHeader, w.MACHeader)
	check("cap len", len(ev.Data), w.CapLen)
	if !bytes.Equal(ev.Data, raw[rawData:rawData+w.CapLen]) {
		t.Errorf("%s: Data is not the record's packet bytes", w.Name)
	}
	p := ev.Packet
	check("proto", p.Proto, w.Proto)
	check("src", p.Src, w.Src)
	check("dst", p.Dst, w.Dst)
	check("sport", p.Sport, w.Sport)
	check("dport", p.Dport, w.Dport)
	check("icmp type", p.ICMPType, w.ICMPType)
	check("icmp code", p.ICMPCode, w.ICMPCode)
	check("tcp flags", p.TCPFlags, w.TCPFlags)
	check("payload len", p.PayloadLen, w.PayloadLen)
	// The records were captured without netfilter attribution.
	check("hook", ev.Hook+ev.Family+ev.Verdict, "")
}

// TestDecodeRecordsScenario checks the records against what their senders
// did, independently of the manifest's decoded values.
func TestDecodeRecordsScenario(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	d := fixtureDecoder(t)
	reasons := loadReasons(t, "6.18")
	noSocket, ok := reasons.Value("NO_SOCKET")
	if !ok || noSocket != 3 {
		t.Fatalf("6.18 NO_SOCKET = %d, %v; want 3", noSocket, ok)
	}
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	for _, tc := range []struct {
		name     string
		fate     fate.Fate
		fn       string // function of the location
		proto    string
		addr     netip.Addr
		dport    uint16
		tcpFlags uint8
		icmpType uint8
		payload  int
	}{
		{"udp4-closed-port", fate.FateDrop, "__udp4_lib_rcv", "udp", lo4, 9, 0, 0, len("pktfate")},
		{"udp6-closed-port", fate.FateDrop, "__udp6_lib_rcv", "udp", lo6, 9, 0, 0, len("pktfate")},
		{"tcp4-syn-closed-port", fate.FateDrop, "tcp_v4_rcv", "tcp", lo4, 9, 0x02, 0, 0},
		{"icmp4-echo-request", fate.FateConsume, "icmp_rcv", "icmp", lo4, 0, 0, 8, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := raws[tc.name]
			var ev fate.Event
			if err := d.Decode(raw, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Fate != tc.fate {
				t.Errorf("fate %s, want %s", ev.Fate, tc.fate)
			}
			if tc.fate == fate.FateDrop && (ev.ReasonCode != noSocket || ev.Reason != "NO_SOCKET") {
				t.Errorf("reason %d %q, want %d NO_SOCKET", ev.ReasonCode, ev.Reason, noSocket)
			}
			if tc.fate == fate.FateConsume && (ev.Reason != "" || ev.ReasonCode != 0) {
				t.Errorf("consumed packet has reason %d %q", ev.ReasonCode, ev.Reason)
			}
			if got := fate.Function(ev.Location); got != tc.fn || !strings.HasPrefix(ev.Location, tc.fn+"+0x") {
				t.Errorf("location %q, want %s+0x...", ev.Location, tc.fn)
			}
			if ev.Ifname != "lo" || ev.Ifindex != 1 || ev.Netns == 0 || ev.Mark != 0 {
				t.Errorf("ifname %q ifindex %d netns %d mark %d, want lo 1 <inode> 0", ev.Ifname, ev.Ifindex, ev.Netns, ev.Mark)
			}
			wantType := uint16(0x0800)
			if tc.addr.Is6() {
				wantType = 0x86dd
			}
			p := ev.Packet
			if ev.EtherType != wantType || p.Proto != tc.proto || p.Src != tc.addr || p.Dst != tc.addr || p.Dport != tc.dport {
				t.Errorf("packet %#04x %+v, want %#04x %s %v > %v:%d", ev.EtherType, p, wantType, tc.proto, tc.addr, tc.addr, tc.dport)
			}
			if (tc.proto == "udp" || tc.proto == "tcp") && p.Sport == 0 {
				t.Errorf("source port 0")
			}
			if p.TCPFlags != tc.tcpFlags || p.ICMPType != tc.icmpType || p.PayloadLen != tc.payload {
				t.Errorf("tcp flags %#x icmp type %d payload %d, want %#x %d %d", p.TCPFlags, p.ICMPType, p.PayloadLen, tc.tcpFlags, tc.icmpType, tc.payload)
			}
			// skb->len is what is left after the kernel pulled the headers it parsed.
			if int(ev.Len) > len(ev.Data) || ev.Len == 0 {
				t.Errorf("len %d, captured %d", ev.Len, len(ev.Data))
			}
			if ev.Time.IsZero() || ev.Mono == 0 || ev.Skb == 0 {
				t.Errorf("time %v mono %d skb %#x", ev.Time, ev.Mono, ev.Skb)
			}
		})
	}
}

// TestDecodeOtherKernelsReasons decodes the same 6.18 record with the drop
// reasons of other kernels: the raw code is kept, the name follows the BTF
// given. This is why names must come from the running kernel.
func TestDecodeOtherKernelsReasons(t *testing.T) {
	m, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	raw := raws["udp4-closed-port"]
	var addr uint64
	for _, r := range m.Records {
		if r.Name == "udp4-closed-port" {
			addr = r.LocationAddr
		}
	}
	for _, tc := range []struct {
		reasons *tracer.Reasons
		want    string
	}{
		{loadReasons(t, "6.18"), "NO_SOCKET"},
		{loadReasons(t, "6.12"), "NO_SOCKET"},
		{loadReasons(t, "6.1"), "PKT_TOO_SMALL"},
		{nil, "UNKNOWN_3"},
	} {
		d := tracer.NewDecoder(tc.reasons, nil, tracer.FixedClock(0))
		var ev fate.Event
		if err := d.Decode(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Reason != tc.want || ev.ReasonCode != 3 {
			t.Errorf("reason %d %q, want 3 %q", ev.ReasonCode, ev.Reason, tc.want)
		}
		// Without symbols the location is the raw address.
		if want := fmt.Sprintf("%#x", addr); ev.Location != want {
			t.Errorf("location without symbols = %q, want %q", ev.Location, want)
		}
	}
}

// mutate returns a copy of raw changed by f.
func mutate(raw []byte, f func(b []byte) []byte) []byte {
	return f(slices.Clone(raw))
}

func setPacket(b []byte, proto uint16, flags uint8, pkt []byte) []byte {
	b = append(b[:rawData], pkt...)
	binary.BigEndian.PutUint16(b[rawProtocol:], proto)
	binary.LittleEndian.PutUint16(b[rawCapLen:], uint16(len(pkt)))
	b[rawFlags] = flags
	return b
}

func TestDecodeVariants(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	udp4 := raws["udp4-closed-port"]
	ip4 := udp4[rawData : rawData+35]
	eth := append([]byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00}, ip4...)
	arp := []byte{
		0, 1, 8, 0, 6, 4, 0, 1, // ethernet/IPv4 request
		0x02, 0, 0, 0, 0, 2, 10, 0, 0, 2, // sender
		0, 0, 0, 0, 0, 0, 10, 0, 0, 1, // target
	}
	consumed, ok := loadReasons(t, "6.18").Value("CONSUMED")
	if !ok {
		t.Fatal("6.18 has no SKB_CONSUMED")
	}
	d := fixtureDecoder(t)
	for _, tc := range []struct {
		name  string
		raw   []byte
		check func(t *testing.T, ev *fate.Event)
	}{
		{"kfree_skb with SKB_CONSUMED is a consume", mutate(udp4, func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[rawReason:], consumed)
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Fate != fate.FateConsume || ev.Reason != "" || ev.ReasonCode != consumed {
				t.Errorf("fate %s reason %d %q, want consume %d \"\"", ev.Fate, ev.ReasonCode, ev.Reason, consumed)
			}
		}},
		{"unknown reason code", mutate(udp4, func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[rawReason:], 999)
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Fate != fate.FateDrop || ev.Reason != "UNKNOWN_999" {
				t.Errorf("fate %s reason %q, want drop UNKNOWN_999", ev.Fate, ev.Reason)
			}
		}},
		{"subsystem reason", mutate(udp4, func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[rawReason:], 2<<16|5)
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Reason != "SUBSYS_OPENVSWITCH:5" {
				t.Errorf("reason %q, want SUBSYS_OPENVSWITCH:5", ev.Reason)
			}
		}},
		{"consume without location (before 6.3)", mutate(raws["icmp4-echo-request"], func(b []byte) []byte {
			clear(b[16:24])
			b[rawFlags] &^= evfHasLocation
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Fate != fate.FateConsume || ev.Location != "" || ev.LocationAddr != 0 || ev.Packet.ICMPType != 8 {
				t.Errorf("fate %s location %q %#x icmp %d", ev.Fate, ev.Location, ev.LocationAddr, ev.Packet.ICMPType)
			}
		}},
		{"MAC header only", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x0800, evfMAC|evfHasLocation, eth)
		}), func(t *testing.T, ev *fate.Event) {
			if !ev.MACHeader || ev.Packet.Proto != "udp" || ev.Packet.Dport != 9 || len(ev.Data) != len(eth) {
				t.Errorf("mac %v packet %+v data %d", ev.MACHeader, ev.Packet, len(ev.Data))
			}
		}},
		{"no header set: bytes kept, not decoded", mutate(udp4, func(b []byte) []byte {
			b[rawFlags] = evfHasLocation
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Packet != (fate.Packet{}) || len(ev.Data) != 35 {
				t.Errorf("packet %+v data %d, want zero packet and 35 bytes", ev.Packet, len(ev.Data))
			}
		}},
		{"ARP", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x0806, evfNetwork|evfHasLocation, arp)
		}), func(t *testing.T, ev *fate.Event) {
			p := ev.Packet
			if p.Proto != "arp" || p.Src != netip.MustParseAddr("10.0.0.2") || p.Dst != netip.MustParseAddr("10.0.0.1") {
				t.Errorf("packet %+v, want arp 10.0.0.2 > 10.0.0.1", p)
			}
		}},
		{"unknown ethertype", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x88cc, evfNetwork|evfHasLocation, []byte{0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1})
		}), func(t *testing.T, ev *fate.Event) {
			if ev.EtherType != 0x88cc || ev.Packet != (fate.Packet{}) {
				t.Errorf("ethertype %#x packet %+v, want 0x88cc and nothing decoded", ev.EtherType, ev.Packet)
			}
		}},
		{"no packet bytes", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x0800, evfNetwork|evfHasLocation, nil)
		}), func(t *testing.T, ev *fate.Event) {
			if len(ev.Data) != 0 || ev.Packet != (fate.Packet{}) {
				t.Errorf("data %d packet %+v", len(ev.Data), ev.Packet)
			}
		}},
		{"truncated IPv4 header", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x0800, evfNetwork|evfHasLocation, ip4[:12])
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Packet.Src.IsValid() || ev.Packet.Sport != 0 {
				t.Errorf("packet %+v decoded from 12 bytes", ev.Packet)
			}
		}},
		{"snap ends inside UDP header", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0x0800, evfNetwork|evfHasLocation, ip4[:24])
		}), func(t *testing.T, ev *fate.Event) {
			p := ev.Packet
			if p.Proto != "ipv4" || p.Dst != netip.MustParseAddr("127.0.0.1") || p.Dport != 0 {
				t.Errorf("packet %+v, want ipv4 only", p)
			}
		}},
		{"ifname of 16 bytes without NUL", mutate(udp4, func(b []byte) []byte {
			copy(b[rawIfname:rawIfname+16], "abcdefghijklmnop")
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Ifname != "abcdefghijklmnop" {
				t.Errorf("ifname %q", ev.Ifname)
			}
		}},
		{"ifname with invalid UTF-8 and bytes after the NUL", mutate(udp4, func(b []byte) []byte {
			copy(b[rawIfname:rawIfname+16], "v\xff\"e\x00garbage")
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Ifname != "v\xff\"e" {
				t.Errorf("ifname %q, want %q", ev.Ifname, "v\xff\"e")
			}
		}},
		{"dropped inside netfilter", mutate(udp4, func(b []byte) []byte {
			b[rawFlags] |= evfNF
			b[rawNfHook], b[rawNfPf] = 1, 2
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Hook != "LOCAL_IN" || ev.Family != "ipv4" || ev.Verdict != "drop" || ev.Reason != "NO_SOCKET" {
				t.Errorf("hook %q family %q verdict %q reason %q, want LOCAL_IN ipv4 drop NO_SOCKET", ev.Hook, ev.Family, ev.Verdict, ev.Reason)
			}
		}},
		{"stolen inside netfilter", mutate(raws["icmp4-echo-request"], func(b []byte) []byte {
			b[rawFlags] |= evfNF
			b[rawNfHook], b[rawNfPf] = 0, 10
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Hook != "PRE_ROUTING" || ev.Family != "ipv6" || ev.Verdict != "stolen" || ev.Fate != fate.FateConsume {
				t.Errorf("hook %q family %q verdict %q fate %s, want PRE_ROUTING ipv6 stolen consume", ev.Hook, ev.Family, ev.Verdict, ev.Fate)
			}
		}},
		{"unknown netfilter hook and family", mutate(udp4, func(b []byte) []byte {
			b[rawFlags] |= evfNF
			b[rawNfHook], b[rawNfPf] = 9, 99
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Hook != "HOOK_9" || ev.Family != "pf99" {
				t.Errorf("hook %q family %q, want HOOK_9 pf99", ev.Hook, ev.Family)
			}
		}},
		{"hook bytes without the netfilter flag", mutate(udp4, func(b []byte) []byte {
			b[rawNfHook], b[rawNfPf] = 1, 2
			return b
		}), func(t *testing.T, ev *fate.Event) {
			if ev.Hook != "" || ev.Family != "" || ev.Verdict != "" {
				t.Errorf("hook %q family %q verdict %q without EVF_NF", ev.Hook, ev.Family, ev.Verdict)
			}
		}},
		{"header only, no data", mutate(udp4, func(b []byte) []byte {
			return setPacket(b, 0, evfHasLocation, nil)
		}), func(t *testing.T, ev *fate.Event) {
			if len(ev.Data) != 0 || ev.EtherType != 0 {
				t.Errorf("data %d ethertype %#x", len(ev.Data), ev.EtherType)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev fate.Event
			if err := d.Decode(tc.raw, &ev); err != nil {
				t.Fatal(err)
			}
			tc.check(t, &ev)
		})
	}
}

// malformedRecords are records the decoder must refuse.
func malformedRecords(tb testing.TB) map[string][]byte {
	_, raws := tracer.LoadRecords(tb, tracer.RecordsDir)
	udp4 := raws["udp4-closed-port"]
	return map[string][]byte{
		"empty":                     nil,
		"one byte":                  {0},
		"header minus one":          udp4[:rawData-1],
		"cap_len beyond the record": udp4[:rawData+34],
		"cap_len of 65535": mutate(udp4, func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[rawCapLen:], 0xffff)
			return b
		}),
		"unknown kind 4": mutate(udp4, func(b []byte) []byte {
			b[rawKind] = 4
			return b
		}),
		"unknown kind 255": mutate(udp4, func(b []byte) []byte {
			b[rawKind] = 0xff
			return b
		}),
	}
}

func TestDecodeMalformed(t *testing.T) {
	d := fixtureDecoder(t)
	for name, raw := range malformedRecords(t) {
		t.Run(name, func(t *testing.T) {
			var ev fate.Event
			err := d.Decode(raw, &ev)
			if err == nil {
				t.Fatalf("decoding a %d-byte record: no error", len(raw))
			}
			if msg := err.Error(); msg == "" || msg[0] < 'a' || msg[0] > 'z' {
				t.Errorf("error %q does not start lowercase", msg)
			}
		})
	}
	// The shortest valid record: a header with no packet bytes.
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	hdr := mutate(raws["udp4-closed-port"][:rawData], func(b []byte) []byte {
		binary.LittleEndian.PutUint16(b[rawCapLen:], 0)
		return b
	})
	var ev fate.Event
	if err := d.Decode(hdr, &ev); err != nil {
		t.Errorf("header-only record: %v", err)
	}
}

func TestEventClone(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	raw := slices.Clone(raws["udp4-closed-port"])
	d := fixtureDecoder(t)
	var ev fate.Event
	if err := d.Decode(raw, &ev); err != nil {
		t.Fatal(err)
	}
	c := ev.Clone()
	clear(raw)
	if c.Data[0] != 0x45 || ev.Data[0] != 0 {
		t.Errorf("Clone shares Data with the record (clone %#x, event %#x)", c.Data[0], ev.Data[0])
	}
	if c.Packet != ev.Packet || c.Location != ev.Location {
		t.Errorf("clone differs: %+v", c)
	}
}

func FuzzDecode(f *testing.F) {
	_, raws := tracer.LoadRecords(f, tracer.RecordsDir)
	for _, raw := range raws {
		f.Add(raw)
	}
	for _, raw := range malformedRecords(f) {
		f.Add(raw)
	}
	d := fixtureDecoder(f)
	var out bytes.Buffer
	r := render.NewNDJSON(&out)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev fate.Event
		if err := d.Decode(raw, &ev); err != nil {
			return
		}
		if len(raw) < rawData || len(ev.Data) > len(raw)-rawData {
			t.Fatalf("decoded a %d-byte record with %d packet bytes", len(raw), len(ev.Data))
		}
		switch ev.Fate {
		case fate.FateDrop:
			if ev.Reason == "" {
				t.Fatal("drop without reason name")
			}
		case fate.FateConsume:
			if ev.Reason != "" {
				t.Fatalf("consume with reason %q", ev.Reason)
			}
		default:
			t.Fatalf("fate %v", ev.Fate)
		}
		if p := ev.Packet; (p.Sport != 0 || p.Dport != 0) && p.Proto != "udp" && p.Proto != "tcp" {
			t.Fatalf("ports on a %q packet", p.Proto)
		}
		// Whatever the kernel wrote, the NDJSON line is valid JSON.
		out.Reset()
		if err := r.Event(&ev); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("NDJSON %q: %v", out.Bytes(), err)
		}
		if got, _ := m["ifname"].(string); got != replaceInvalidBytes(ev.Ifname) {
			t.Fatalf("ifname %q rendered as %q", ev.Ifname, got)
		}
	})
}

// replaceInvalidBytes replaces every byte that is not part of valid UTF-8
// with U+FFFD, as encoding/json and the NDJSON renderer do.
func replaceInvalidBytes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func BenchmarkDecode(b *testing.B) {
	m, raws := tracer.LoadRecords(b, tracer.RecordsDir)
	var recs [][]byte
	for _, w := range m.Records {
		recs = append(recs, raws[w.Name])
	}
	d := fixtureDecoder(b)
	var ev fate.Event
	b.ReportAllocs()
	i := 0
	var cpu0 time.Duration
	for b.Loop() {
		if i == 0 {
			cpu0 = processCPUTime(b)
		}
		if err := d.Decode(recs[i%len(recs)], &ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(i)/(processCPUTime(b)-cpu0).Seconds(), "events/cpu-s")
}

// processCPUTime is the CPU time of the process: with -cpu 1 and no
// allocations, the benchmark's, whatever else runs on the machine.
func processCPUTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestDecodeTCPFlags sets each flag bit of the recorded SYN's TCP header:
// Packet.TCPFlags uses the header's own bit order (FIN=0x01 ... CWR=0x80).
func TestDecodeTCPFlags(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	syn := raws["tcp4-syn-closed-port"]
	const tcpFlagsByte = rawData + 20 + 13 // IPv4 header without options, then TCP byte 13
	if syn[tcpFlagsByte] != 0x02 {
		t.Fatalf("recorded SYN has TCP flags %#x at its offset 13", syn[tcpFlagsByte])
	}
	d := fixtureDecoder(t)
	for _, flags := range []uint8{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x12, 0x14, 0xff, 0} {
		raw := mutate(syn, func(b []byte) []byte {
			b[tcpFlagsByte] = flags
			return b
		})
		var ev fate.Event
		if err := d.Decode(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Packet.Proto != "tcp" || ev.Packet.TCPFlags != flags {
			t.Errorf("header flags %#02x decoded as %s %#02x", flags, ev.Packet.Proto, ev.Packet.TCPFlags)
		}
	}
}

// TestDecodeInferredReason: a consume at a location the inferred-reasons
// table names is reported as a drop with pktfate's reason, marked
// inferred; other consumes stay consumes.
func TestDecodeInferredReason(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	d := fixtureDecoder(t)
	d.Inferred = tracer.NewInferredReasons(map[string]string{"icmp_rcv": "TEST_REFUSAL (inferred from icmp_rcv)"})
	var ev fate.Event
	if err := d.Decode(raws["icmp4-echo-request"], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fate != fate.FateDrop || ev.Reason != "TEST_REFUSAL (inferred from icmp_rcv)" || !ev.ReasonInferred {
		t.Errorf("consume at icmp_rcv: %s %q inferred %v", ev.Fate, ev.Reason, ev.ReasonInferred)
	}
	if err := d.Decode(raws["udp4-closed-port"], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Reason != "NO_SOCKET" || ev.ReasonInferred {
		t.Errorf("kernel's own reason: %q inferred %v", ev.Reason, ev.ReasonInferred)
	}
	d.Inferred = tracer.DefaultInferredReasons()
	if err := d.Decode(raws["icmp4-echo-request"], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fate != fate.FateConsume || ev.ReasonInferred {
		t.Errorf("default table: consume at icmp_rcv became %s inferred %v", ev.Fate, ev.ReasonInferred)
	}
}

// TestDecodeListenDrop: a consume the program marked as a SYN the listener
// refused is a drop with the inferred reason; the mark means nothing on a
// drop, which keeps the kernel's reason.
func TestDecodeListenDrop(t *testing.T) {
	_, raws := tracer.LoadRecords(t, tracer.RecordsDir)
	d := fixtureDecoder(t)
	mark := func(b []byte) []byte { b[rawFlags+1] |= 0x02; return b } // EVF_LISTEN_DROP, 1 << 9
	var ev fate.Event
	if err := d.Decode(mutate(raws["icmp4-echo-request"], mark), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fate != fate.FateDrop || ev.Reason != tracer.ReasonListenDrop || !ev.ReasonInferred {
		t.Errorf("marked consume: %s %q inferred %v", ev.Fate, ev.Reason, ev.ReasonInferred)
	}
	if err := d.Decode(mutate(raws["udp4-closed-port"], mark), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fate != fate.FateDrop || ev.Reason != "NO_SOCKET" || ev.ReasonInferred {
		t.Errorf("marked drop: %s %q inferred %v", ev.Fate, ev.Reason, ev.ReasonInferred)
	}
	if err := d.Decode(raws["icmp4-echo-request"], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fate != fate.FateConsume || ev.ReasonInferred {
		t.Errorf("unmarked consume: %s inferred %v", ev.Fate, ev.ReasonInferred)
	}
}
