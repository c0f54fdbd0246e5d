package dropmon

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
)

const fixtureDir = "../../testdata/dropmon"

// readHex reads a fixture: hex digits, whitespace ignored, "#" starts a
// comment that runs to the end of the line.
func readHex(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := parseHex(f)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return b
}

func parseHex(f []byte) ([]byte, error) {
	var digits strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(f))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return hex.DecodeString(digits.String())
}

// attrs returns the attributes of a fixture's message (after the netlink
// and generic netlink headers).
func attrs(tb testing.TB, msg []byte) []byte {
	tb.Helper()
	if len(msg) < nlmsgHeaderLen+genlHeaderLen {
		tb.Fatalf("fixture of %d bytes", len(msg))
	}
	return msg[nlmsgHeaderLen+genlHeaderLen:]
}

var udp4Payload = mustHex("000000000000000000000000" + "0800" +
	"450000201234400040112a977f0000017f000001" + "9c40270f000c0000" + "70696e67")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseMessageUAPIFixtures(t *testing.T) {
	swWant := PacketAlert{
		Origin: OriginSoftware, PC: 0xffffffff81b2c3da, Symbol: "__udp4_lib_rcv+0x6ba/0xd50",
		Reason: "NO_SOCKET", Ifindex: 1, Timestamp: 1795751640123456789, OrigLen: 46,
		Proto: 0x0800, Payload: udp4Payload,
	}
	noReason := swWant
	noReason.Reason = ""
	hwPayload := append(mustHex("020000000001020000000002"+"0800"), udp4Payload[14:]...)
	for _, tt := range []struct {
		file    string
		kind    AlertKind
		packet  PacketAlert
		summary SummaryAlert
	}{
		{file: "packet_sw_udp4.hex", kind: KindPacket, packet: swWant},
		{file: "packet_sw_pad.hex", kind: KindPacket, packet: swWant},
		{file: "packet_sw_noreason.hex", kind: KindPacket, packet: noReason},
		{file: "packet_hw.hex", kind: KindPacket, packet: PacketAlert{
			Origin: OriginHardware, HWTrapGroup: "l3_drops", HWTrapName: "blackhole_route",
			Ifindex: 3, Ifname: "swp1", FlowActionCookie: []byte{0xde, 0xad, 0xbe, 0xef},
			Timestamp: 1795751640123456789, OrigLen: 46, Proto: 0x0800, Payload: hwPayload,
		}},
		{file: "summary.hex", kind: KindSummary, summary: SummaryAlert{
			Drops: []DropPoint{{PC: 0xffffffff81b2c3da, Count: 3}, {PC: 0, Count: 1}},
		}},
		{file: "summary_hw.hex", kind: KindSummary, summary: SummaryAlert{
			Drops: []DropPoint{}, HW: []HWDrop{{TrapName: "blackhole_route", Count: 7}},
		}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			b := readHex(t, filepath.Join(fixtureDir, "uapi", tt.file))
			var a Alert
			n, err := ParseMessage(b, &a)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(b) {
				t.Errorf("consumed %d of %d bytes", n, len(b))
			}
			if a.Kind != tt.kind {
				t.Fatalf("kind %s, want %s", a.Kind, tt.kind)
			}
			switch tt.kind {
			case KindPacket:
				if !reflect.DeepEqual(normPacket(a.Packet), normPacket(tt.packet)) {
					t.Errorf("got  %+v\nwant %+v", a.Packet, tt.packet)
				}
			case KindSummary:
				if !reflect.DeepEqual(normSummary(a.Summary), normSummary(tt.summary)) {
					t.Errorf("got  %+v\nwant %+v", a.Summary, tt.summary)
				}
			}
		})
	}
}

// normPacket makes empty and nil slices compare equal.
func normPacket(p PacketAlert) PacketAlert {
	if len(p.Payload) == 0 {
		p.Payload = nil
	}
	if len(p.FlowActionCookie) == 0 {
		p.FlowActionCookie = nil
	}
	return p
}

func normSummary(s SummaryAlert) SummaryAlert {
	if len(s.Drops) == 0 {
		s.Drops = nil
	}
	if len(s.HW) == 0 {
		s.HW = nil
	}
	return s
}

func TestParseMessageMalformed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(fixtureDir, "uapi", "bad_*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no malformed fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var a Alert
			_, err := ParseMessage(readHex(t, f), &a)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if a.Kind != KindNone {
				t.Errorf("kind %s after an error, want none", a.Kind)
			}
			t.Log(err)
		})
	}
}

// TestParseMessageTruncated cuts every fixture at every length: each cut
// must fail (the netlink header says more), and decoding the cut attributes
// alone must not panic.
func TestParseMessageTruncated(t *testing.T) {
	for _, f := range goodFixtures(t) {
		b := readHex(t, f)
		for n := range len(b) {
			var a Alert
			if _, err := ParseMessage(b[:n], &a); err == nil {
				t.Fatalf("%s cut to %d bytes: no error", f, n)
			}
			if n >= nlmsgHeaderLen+genlHeaderLen {
				_ = decodeAttrs(b[nlmsgHeaderLen+genlHeaderLen:n], b[nlmsgHeaderLen], &a)
			}
		}
	}
}

func decodeAttrs(b []byte, cmd uint8, a *Alert) error {
	if cmd != cmdAlert {
		return parsePacketAlert(b, &a.Packet)
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	return parseSummaryAlert(ad, &a.Summary)
}

// goodFixtures lists every alert fixture that must decode: hand-built and
// recorded.
func goodFixtures(tb testing.TB) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(fixtureDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !strings.HasSuffix(name, ".hex") || strings.HasPrefix(name, "bad_") ||
			strings.HasPrefix(name, "config_") || strings.HasPrefix(name, "stats_") {
			return nil
		}
		out = append(out, path)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestParseMessageReuses(t *testing.T) {
	b := readHex(t, filepath.Join(fixtureDir, "uapi", "packet_sw_udp4.hex"))
	var a Alert
	if _, err := ParseMessage(b, &a); err != nil {
		t.Fatal(err)
	}
	kept := a.Clone()
	p := &a.Packet.Payload[0]
	hw := readHex(t, filepath.Join(fixtureDir, "uapi", "packet_hw.hex"))
	if _, err := ParseMessage(hw, &a); err != nil {
		t.Fatal(err)
	}
	if &a.Packet.Payload[0] != p {
		t.Error("payload buffer not reused")
	}
	if a.Packet.PC != 0 || a.Packet.Symbol != "" || a.Packet.Reason != "" {
		t.Errorf("fields of the previous alert leaked: %+v", a.Packet)
	}
	if !bytes.Equal(kept.Packet.Payload, udp4Payload) {
		t.Error("Clone shares the payload")
	}
}

// TestParseMessageDatagram walks a datagram of two messages.
func TestParseMessageDatagram(t *testing.T) {
	one := readHex(t, filepath.Join(fixtureDir, "uapi", "summary.hex"))
	two := readHex(t, filepath.Join(fixtureDir, "uapi", "packet_sw_noreason.hex"))
	b := append(append([]byte(nil), one...), two...)
	var a Alert
	var kinds []AlertKind
	for len(b) > 0 {
		n, err := ParseMessage(b, &a)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, a.Kind)
		b = b[n:]
	}
	if !reflect.DeepEqual(kinds, []AlertKind{KindSummary, KindPacket}) {
		t.Errorf("kinds %v", kinds)
	}
}

func TestParseMessageUnexpected(t *testing.T) {
	var a Alert
	_, err := ParseMessage(readHex(t, filepath.Join(fixtureDir, "uapi", "config_new.hex")), &a)
	if !errors.Is(err, ErrUnexpected) {
		t.Fatalf("err = %v, want ErrUnexpected", err)
	}
}

// checkUDPPayload checks that a packet alert's payload (from the MAC
// header) is the UDP datagram src -> dst.
func checkUDPPayload(tb testing.TB, p []byte, src, dst netip.AddrPort) {
	tb.Helper()
	if len(p) < 14+20+8 {
		tb.Fatalf("payload of %d bytes", len(p))
	}
	ip := p[14:]
	if p[12] != 0x08 || p[13] != 0x00 || ip[0]>>4 != 4 || ip[9] != 17 {
		tb.Fatalf("not IPv4/UDP: % x", p[:min(len(p), 40)])
	}
	ihl := int(ip[0]&0xf) * 4
	s, _ := netip.AddrFromSlice(ip[12:16])
	d, _ := netip.AddrFromSlice(ip[16:20])
	udp := ip[ihl:]
	gotSrc := netip.AddrPortFrom(s, uint16(udp[0])<<8|uint16(udp[1]))
	gotDst := netip.AddrPortFrom(d, uint16(udp[2])<<8|uint16(udp[3]))
	if gotSrc != src || gotDst != dst {
		tb.Errorf("payload %s > %s, want %s > %s", gotSrc, gotDst, src, dst)
	}
}

func TestCheckUDPPayload(t *testing.T) {
	checkUDPPayload(t, udp4Payload, netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:9999"))
}
