package render

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pktfate/pktfate/fate"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const goldenDir = "../../testdata/golden"

// base is the time of the first golden event.
var base = time.Date(2026, 11, 27, 4, 10, 0, 123456789, time.UTC)

// goldenEvents covers what the renderers distinguish: both fates, IPv4 and
// IPv6, TCP flags, ICMP and ICMPv6, ARP, an IP packet without a known
// transport, an unknown ethertype, missing interface names, locations and
// namespaces, a subsystem reason, and an interface name with a quote,
// invalid UTF-8 and a control character (names are arbitrary bytes).
func goldenEvents() []*fate.Event {
	a := netip.MustParseAddr
	return []*fate.Event{
		{
			Source: "ebpf", Time: base, Mono: 819812899262, CPU: 0, Skb: 0xffff888106837400,
			Fate: fate.FateDrop, ReasonCode: 3, Reason: "NO_SOCKET",
			LocationAddr: 0xffffffff82046f4c, Location: "__udp4_lib_rcv+0x4bc",
			Netns: 4026532246, Ifindex: 1, Ifname: "lo", Len: 15, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "udp", Src: a("127.0.0.1"), Dst: a("127.0.0.1"), Sport: 41784, Dport: 9, PayloadLen: 7},
		},
		{
			Source: "ebpf", Time: base.Add(250 * time.Microsecond), CPU: 1, Skb: 0xffff888106837c00,
			Fate: fate.FateConsume, LocationAddr: 0xffffffff8204f809, Location: "icmp_rcv+0x259",
			Netns: 4026532246, Ifindex: 1, Ifname: "lo", Len: 7, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "icmp", Src: a("127.0.0.1"), Dst: a("127.0.0.1"), ICMPType: 8},
		},
		{
			// Crosses into the next second.
			Source: "ebpf", Time: base.Add(900 * time.Millisecond), CPU: 1, Skb: 0xffff888101a2b300,
			Fate: fate.FateDrop, ReasonCode: 8, Reason: "NETFILTER_DROP",
			LocationAddr: 0xffffffff81f0c59b, Location: "nf_hook_slow+0x9b",
			Hook: "LOCAL_IN", Family: "ipv6", Verdict: "drop",
			Netns: 4026531840, Ifindex: 2, Ifname: "eth0", Mark: 0x2a, Len: 40, EtherType: 0x86dd,
			Packet: fate.Packet{Proto: "tcp", Src: a("2001:db8::1"), Dst: a("2001:db8::2"), Sport: 443, Dport: 51234, TCPFlags: 0x12},
		},
		{
			// Exactly on a second: nine zero digits.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 2, 0, time.UTC), CPU: 0, Skb: 0xffff888101a2b400,
			Fate: fate.FateDrop, ReasonCode: 6, Reason: "TCP_INVALID_SEQUENCE",
			LocationAddr: 0xffffffff8203a011, Location: "tcp_validate_incoming+0x111",
			Netns: 4026531840, Ifindex: 2, Ifname: "eth0", Len: 1240, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "tcp", Src: a("198.51.100.7"), Dst: a("10.0.0.2"), Sport: 80, Dport: 40000, TCPFlags: 0xff, PayloadLen: 1200},
		},
		{
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 2, 1, time.UTC), CPU: 0,
			Fate: fate.FateDrop, ReasonCode: 63, Reason: "IP_INNOROUTES",
			LocationAddr: 0xffffffff820f1234, Location: "ip6_pkt_drop+0x54",
			Netns: 4026531840, Ifindex: 3, Ifname: "veth-a", Len: 104, EtherType: 0x86dd,
			Packet: fate.Packet{Proto: "icmp6", Src: a("fd00::1"), Dst: a("fd00:1::9"), ICMPType: 1, ICMPCode: 4},
		},
		{
			// Purged from a reassembly queue: no device, no socket; the
			// netns filter placed it by its arrival interface.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 2, 500, time.UTC), CPU: 1,
			Fate: fate.FateDrop, ReasonCode: 70, Reason: "FRAG_REASM_TIMEOUT",
			LocationAddr: 0xffffffff82031000, Location: "inet_frag_rbtree_purge+0x55",
			Netns: 4026532246, NetnsFrom: fate.NetnsGuessed, Ifindex: 1, IfindexFrom: "iif", Ifname: "lo", Len: 1500, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "udp", Src: a("127.0.0.1"), Dst: a("127.0.0.1"), Sport: 5000, Dport: 9},
		},
		{
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 500000000, time.UTC), CPU: 1,
			Fate: fate.FateDrop, ReasonCode: 2, Reason: "NOT_SPECIFIED",
			LocationAddr: 0xffffffff8202b01f, Location: "arp_rcv+0x1f",
			Netns: 4026532300, Ifindex: 3, Ifname: "veth-a", Len: 28, EtherType: 0x0806,
			Packet: fate.Packet{Proto: "arp", Src: a("10.0.0.2"), Dst: a("10.0.0.1")},
		},
		{
			// IPv4 whose transport was not captured (a fragment).
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 600000000, time.UTC), CPU: 1,
			Fate: fate.FateDrop, ReasonCode: 69, Reason: "FRAG_REASM_TIMEOUT",
			Location: "ip_expire+0x1c3", LocationAddr: 0xffffffff81ff01c3,
			Netns: 4026532300, Ifindex: 3, Ifname: "veth-a", Len: 1480, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "ipv4", Src: a("10.0.0.2"), Dst: a("10.0.0.1")},
		},
		{
			// LLDP: an ethertype pktfate does not decode; no device.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 700000000, time.UTC), CPU: 0,
			Fate: fate.FateDrop, ReasonCode: 33, Reason: "UNHANDLED_PROTO",
			Location: "__netif_receive_skb_core+0x8a1", LocationAddr: 0xffffffff81e6a8a1,
			Len: 60, EtherType: 0x88cc,
		},
		{
			// Interface known by index only; unsymbolised module address; subsystem reason.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 800000000, time.UTC), CPU: 0,
			Fate: fate.FateDrop, ReasonCode: 2<<16 | 5, Reason: "SUBSYS_OPENVSWITCH:5",
			Location: "0xffffffffc0a01234", LocationAddr: 0xffffffffc0a01234,
			Netns: 4026532300, Ifindex: 5, Len: 98, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "icmp", Src: a("10.0.0.2"), Dst: a("10.0.0.1"), ICMPType: 0},
		},
		{
			// An interface name with a quote, a backslash, invalid UTF-8, a control character and non-ASCII.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 900000000, time.UTC), CPU: 1,
			Fate: fate.FateDrop, ReasonCode: 3, Reason: "NO_SOCKET",
			Location: "__udp6_lib_rcv+0xe1", LocationAddr: 0xffffffff82107981,
			Netns: 4026532300, Ifindex: 7, Ifname: "v\"\\\xff\xfe\x1bé", Mark: 0xffffffff, Len: 15, EtherType: 0x86dd,
			Packet: fate.Packet{Proto: "udp", Src: a("fd00::2"), Dst: a("fd00::1"), Sport: 5353, Dport: 9, PayloadLen: 7},
		},
		{
			// Taken by a netfilter hook (NF_STOLEN) and freed as consumed.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 3, 950000000, time.UTC), CPU: 0,
			Fate: fate.FateConsume, Location: "nf_queue_entry_free+0x2d", LocationAddr: 0xffffffff81f0e02d,
			Hook: "PRE_ROUTING", Family: "ipv4", Verdict: "stolen",
			Netns: 4026532300, Ifindex: 3, Ifname: "veth-a", Len: 84, EtherType: 0x0800,
			Packet: fate.Packet{Proto: "icmp", Src: a("10.0.0.2"), Dst: a("10.0.0.1"), ICMPType: 8},
		},
		{
			// consume_skb before 6.3: no location.
			Source: "ebpf", Time: time.Date(2026, 11, 27, 4, 10, 4, 0, time.UTC), CPU: 0,
			Fate: fate.FateConsume, Netns: 4026532300, Ifindex: 3, Ifname: "veth-a", Len: 0,
		},
	}
}

func goldenSummary(events []*fate.Event) *fate.Summary {
	s := fate.NewSummary()
	for _, e := range events {
		s.Add(e)
	}
	s.Start = base.Add(-time.Second)
	s.End = time.Date(2026, 11, 27, 4, 10, 5, 250000000, time.UTC)
	s.Lost = []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full", Value: 12}, {Observer: "ebpf", Name: "decode_errors", Value: 0}}
	s.Sources = []fate.SourceStatus{
		{Name: "ebpf", Running: true},
		{Name: "dropmon", Reason: "generic netlink family \"NET_DM\" not registered: file does not exist"},
	}
	return s
}

// renderAll renders the golden events and summary with r.
func renderAll(t *testing.T, r Renderer) {
	t.Helper()
	events := goldenEvents()
	for _, e := range events {
		if err := r.Event(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Summary(goldenSummary(events)); err != nil {
		t.Fatal(err)
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join(goldenDir, name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := range max(len(gl), len(wl)) {
			var g, w []byte
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if !bytes.Equal(g, w) {
				t.Errorf("%s line %d:\n got  %q\n want %q", name, i+1, g, w)
			}
		}
		t.Errorf("%s differs from the golden file (run go test -update if the change is intended)", name)
	}
}

// goldenText is a text renderer as trace sets it up, in UTC (the goldens
// must not depend on the machine's zone), with names for two namespaces
// and 4026531840 as the home one.
func goldenText(w io.Writer, wide bool) *Text {
	r := NewText(w)
	r.Location, r.Wide, r.HomeNetns = time.UTC, wide, 4026531840
	names := map[uint32]string{4026532246: "blue", 4026532300: "pktfate-router"}
	r.NetnsName = func(ino uint32) string { return names[ino] }
	return r
}

func TestTextGolden(t *testing.T) {
	var out bytes.Buffer
	renderAll(t, goldenText(&out, false))
	checkGolden(t, "trace.txt", out.Bytes())
	out.Reset()
	renderAll(t, goldenText(&out, true))
	checkGolden(t, "trace-wide.txt", out.Bytes())
}

// TestTextFits120Columns: the default line of a typical IPv4 packet fits
// 120 columns, as a plain event and as a confirmed fate record: UDP
// between 15-character addresses in another namespace (named), the demo's
// netfilter drop and a TCP SYN dropped in LOCAL_IN (with the hook), an
// ICMP echo delivered. A wide line carries every column.
func TestTextFits120Columns(t *testing.T) {
	a := netip.MustParseAddr
	const home = 4026531840
	typical := []*fate.Event{
		{Source: "ebpf", Time: base, Fate: fate.FateDrop, Reason: "NO_SOCKET", Location: "__udp4_lib_rcv+0x4bc",
			Netns: 4026532246, Ifindex: 2, Ifname: "eth0",
			Packet: fate.Packet{Proto: "udp", Src: a("192.168.100.200"), Dst: a("192.168.100.201"), Sport: 51234, Dport: 53, PayloadLen: 33}},
		{Source: "ebpf", Time: base, Fate: fate.FateDrop, Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x3e8",
			Hook: "LOCAL_IN", Family: "ipv4", Verdict: "drop", Netns: home, Ifindex: 2, Ifname: "pfdemo1",
			Packet: fate.Packet{Proto: "udp", Src: a("192.0.2.1"), Dst: a("192.0.2.2"), Sport: 50263, Dport: 7777, PayloadLen: 12}},
		{Source: "ebpf", Time: base, Fate: fate.FateDrop, Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x3e8",
			Hook: "LOCAL_IN", Family: "ipv4", Verdict: "drop", Netns: home, Ifindex: 2, Ifname: "eth0",
			Packet: fate.Packet{Proto: "tcp", Src: a("10.1.2.3"), Dst: a("10.1.2.4"), Sport: 51234, Dport: 443, TCPFlags: 0x02}},
		{Source: "ebpf", Time: base, Fate: fate.FateConsume, Location: "icmp_rcv+0x259", Netns: home, Ifindex: 1, Ifname: "lo",
			Packet: fate.Packet{Proto: "icmp", Src: a("192.0.2.1"), Dst: a("192.0.2.2"), ICMPType: 8}},
	}
	check := func(what string, out []byte) {
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			if n := utf8.RuneCountInString(l); n > 120 {
				t.Errorf("%s: line of %d columns: %q", what, n, l)
			}
		}
	}
	for _, fated := range []bool{false, true} {
		var out bytes.Buffer
		r := goldenText(&out, false)
		for _, e := range typical {
			var err error
			if fated {
				err = r.Fate(&fate.FateRecord{Event: e, Verdict: fate.VerdictConfirmed})
			} else {
				err = r.Event(e)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		r.Flush()
		check(fmt.Sprintf("typical (fate records %v)", fated), out.Bytes())
		for _, want := range []string{" UDP 192.168.100.200:51234 > 192.168.100.201:53 len 33 ", " eth0@blue\n", " pfdemo1  LOCAL_IN\n", " eth0  LOCAL_IN\n"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("lines lack %q:\n%s", want, out.String())
			}
		}
		if strings.Contains(out.String(), "confirmed") || strings.Contains(out.String(), " lo@") {
			t.Errorf("a confirmed record or the home namespace is spelt out:\n%s", out.String())
		}
	}
	// Wide: every column, the date, the namespace's inode and name.
	var out bytes.Buffer
	r := goldenText(&out, true)
	r.Event(typical[0])
	r.Fate(&fate.FateRecord{Event: typical[2], Verdict: fate.VerdictConfirmed,
		Observers: []fate.ObserverReport{{Name: "ebpf", Status: fate.StatusSaw}, {Name: "nf", Status: fate.StatusSaw}}})
	r.Flush()
	for _, want := range []string{"2026-11-27 04:10:00.123456789", " ebpf ", "ipv4 LOCAL_IN drop", "eth0#2", "4026532246:blue", "0x0",
		" confirmed ", "ebpf+nf\n", "VERDICT", "OBSERVERS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("wide lines lack %q:\n%s", want, out.String())
		}
	}
}

// TestTextLocalTime: times are local unless a zone is given, and the
// header names a zone that is not local.
func TestTextLocalTime(t *testing.T) {
	e := goldenEvents()[0]
	zone := time.FixedZone("XST", 3*3600+30*60)
	var out bytes.Buffer
	r := NewText(&out)
	r.Location = zone
	r.Event(e)
	r.Flush()
	if !strings.HasPrefix(out.String(), "TIME(XST) ") || !strings.Contains(out.String(), "\n07:40:00.123456 ") {
		t.Errorf("in XST:\n%s", out.String())
	}
	out.Reset()
	r = NewText(&out)
	r.Event(e)
	r.Flush()
	want := e.Time.Local().Format("15:04:05.000000")
	if !strings.HasPrefix(out.String(), "TIME ") || !strings.Contains(out.String(), "\n"+want+" ") {
		t.Errorf("local time %s not shown:\n%s", want, out.String())
	}
}

func TestShortReason(t *testing.T) {
	for in, want := range map[string]string{
		"generic netlink family NET_DM not registered (kernel without CONFIG_NET_DROP_MONITOR, drop_monitor module not loaded, or not in the initial network namespace): netlink receive: no such file or directory": "this kernel has no drop monitor (NET_DM)",
		"generic netlink family pktfate not registered: the pktfate kernel module is not loaded (or this is not the initial network namespace)":                                                                      "the pktfate kernel module is not loaded",
		"dropmon needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root: permission denied":                                                                                                                              "dropmon needs CAP_NET_ADMIN and CAP_SYS_ADMIN",
		"plain": "plain",
	} {
		if got := ShortReason(in); got != want {
			t.Errorf("ShortReason(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNDJSONGolden(t *testing.T) {
	var out bytes.Buffer
	renderAll(t, NewNDJSON(&out))
	checkGolden(t, "trace.ndjson", out.Bytes())
}

// TestTextIsSafeForTerminals checks that no event field reaches the terminal
// as raw control bytes or invalid UTF-8 (an interface name may hold ESC).
func TestTextIsSafeForTerminals(t *testing.T) {
	var out bytes.Buffer
	renderAll(t, goldenText(&out, false))
	if !utf8.Valid(out.Bytes()) {
		t.Error("text output is not valid UTF-8")
	}
	for i, c := range out.Bytes() {
		if c < 0x20 && c != '\n' || c == 0x7f {
			t.Errorf("control byte %#x at offset %d", c, i)
		}
	}
	for in, want := range map[string]string{
		"eth0":        "eth0",
		"veth-é":      "veth-é",
		"a\x1b[2Jb":   `"a\x1b[2Jb"`,
		"v\xff":       `"v\xff"`,
		"tab\tname":   `"tab\tname"`,
		"del\x7f":     `"del\x7f"`,
		"quote\"only": "quote\"only",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
	}
}
