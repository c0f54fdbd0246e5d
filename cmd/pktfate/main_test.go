package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := realMain([]string{"--version"}, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "pktfate ") {
		t.Errorf("--version: rc %d, output %q", rc, out.String())
	}
	out.Reset()
	if rc := realMain([]string{"trace", "-h"}, &out, &errb); rc != 0 || !strings.Contains(errb.String(), "--filter-netns") && !strings.Contains(errb.String(), "-filter-netns") {
		t.Errorf("trace -h: rc %d, stderr %q", rc, errb.String())
	}
}

// TestBadInput checks that every user mistake gets one clear line (the
// flag, the value, what it accepts), never the usage text, and exit status
// 2, before anything is attached (these run without privileges, but for
// the kernel's drop reasons, which need its BTF).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	nd := filepath.Join(dir, "cap.ndjson")
	os.WriteFile(nd, []byte(`{"type":"event","time":"2026-11-27T04:10:00.123456789Z","source":"ebpf","fate":"drop","reason":"NO_SOCKET","mark":0,"len":35,"proto":"udp","src":"10.0.0.1","dst":"10.0.0.2","sport":1,"dport":9,"cpu":0}`+"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" (commands: trace, top, report, demo, check; pktfate -h says more)`},
		{[]string{"trcae"}, `unknown command "trcae"; did you mean trace?`},
		{[]string{"trace", "--snaplen", "9999"}, "--snaplen 9999 out of range: use 0 to 256"},
		{[]string{"trace", "--filter-fate", "maybe"}, `--filter-fate "maybe": use drop, consume or all`},
		{[]string{"trace", "--no-such-flag"}, "unknown flag --no-such-flag (pktfate trace -h lists the flags)"},
		{[]string{"trace", "--filter-ifnam", "lo"}, "unknown flag --filter-ifnam; did you mean --filter-ifname"},
		{[]string{"trace", "--source", "carrier-pigeon"}, `--source "carrier-pigeon": not a source; use ebpf, nf, dropmon, kmod or auto`},
		{[]string{"trace", "--source", "ebpf,pigeon"}, `--source "ebpf,pigeon": "pigeon" is not a source`},
		{[]string{"trace", "--duration", "-1s"}, "--duration must not be negative"},
		{[]string{"trace", "--duration", "5"}, `--duration "5": want a duration such as 500ms, 10s or 1m30s`},
		{[]string{"trace", "--count", "ten"}, `--count "ten": want a whole number, 0 or more`},
		{[]string{"trace", "-c", "-3"}, `-c "-3": want a whole number, 0 or more`},
		{[]string{"trace", "-c"}, "-c needs a value: a whole number, 0 or more"},
		{[]string{"trace", "--output-json=yes"}, `--output-json takes no value ("yes" given; write --output-json=false to turn it off)`},
		{[]string{"trace", "udp", "port"}, `bad filter expression "udp port": can't parse filter expression: syntax error`},
		{[]string{"trace", "--filter-mark", "ten"}, `--filter-mark "ten": want MARK or MARK/MASK`},
		{[]string{"trace", "--filter-mark", "1/0"}, "mask must be a non-zero number"},
		{[]string{"trace", "--filter-netns", "no-such-ns-pktfate"}, `--filter-netns no-such-ns-pktfate: no network namespace named no-such-ns-pktfate under /run/netns`},
		{[]string{"trace", "--filter-netns", "4000000000"}, "--filter-netns 4000000000: no network namespace has inode 4000000000"},
		{[]string{"trace", "--filter-netns", "/etc/passwd"}, "--filter-netns /etc/passwd: not a network namespace"},
		{[]string{"trace", "--filter-ifname", "nosuchif0"}, `--filter-ifname "nosuchif0": no such interface`},
		{[]string{"trace", "-i", "nosuchif0"}, `--filter-ifname "nosuchif0": no such interface`},
		{[]string{"trace", "--filter-reason", "NO_SOCKET", "--filter-fate", "consume"}, "--filter-reason shows drops only, and --filter-fate consume asks for consumed packets too"},
		{[]string{"trace", "--filter-reason", "NO_SOCKET", "--filter-fate", "all"}, "--filter-reason shows drops only, and --filter-fate all asks for consumed packets too"},
		{[]string{"top", "--interval", "1ms"}, "--interval 1ms out of range: use 100ms to 1h"},
		{[]string{"top", "--output-json"}, "unknown flag --output-json (pktfate top -h lists the flags)"},
		{[]string{"trace", "--output-raw", filepath.Join(dir, "r.raw"), "--output-json"}, "--output-raw writes the records undecoded, for pktfate report to render later"},
		{[]string{"trace", "--output-raw", filepath.Join(dir, "r.raw"), "--source", "ebpf,dropmon"}, "--output-raw records the ebpf source's ring alone, and --source ebpf,dropmon asks for more"},
		{[]string{"report"}, "report takes a capture file"},
		{[]string{"report", nd, "udp"}, "a filter expression limits the packet list: add --packets (-l)"},
		{[]string{"report", "-l", nd, "udp"}, "a filter expression needs the packets' bytes, and NDJSON holds none"},
		{[]string{"report", "-l", nd, "udp", "port"}, `bad filter expression "udp port"`},
		{[]string{"demo", "--timeout", "soon"}, `--timeout "soon": want a duration`},
	} {
		var out, errb bytes.Buffer
		rc := realMain(tc.args, &out, &errb)
		msg := errb.String()
		if rc != 2 {
			t.Errorf("%q: exit status %d, want 2 (stderr %q)", tc.args, rc, msg)
		}
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%q: stderr %q does not say %q", tc.args, msg, tc.want)
		}
		if len(tc.args) > 0 && (strings.Count(msg, "\n") != 1 || strings.Contains(msg, "Usage") || strings.Contains(msg, "  -")) {
			t.Errorf("%q: not one line: %q", tc.args, msg)
		}
		if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
			t.Errorf("%q: stderr has a stack trace: %q", tc.args, msg)
		}
	}
}

// TestBadReason: a misspelt drop reason gets one short line with the
// nearest names of the running kernel, and an internal entry of its enum
// is refused and never offered.
func TestBadReason(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("the kernel has no BTF (/sys/kernel/btf/vmlinux): no drop reasons to check against")
	}
	for _, tc := range []struct{ reason, want string }{
		{"NO_SOCKT", "--filter-reason NO_SOCKT: no such drop reason in this kernel; did you mean NO_SOCKET?"},
		{"no_sockt", "--filter-reason NO_SOCKT: no such drop reason in this kernel; did you mean NO_SOCKET?"},
		{"MAX", "--filter-reason MAX: not a reason a packet is dropped for"},
		{"NOT_DROPPED_YET", "--filter-reason NOT_DROPPED_YET: not a reason a packet is dropped for"},
		{"NO_SOCKET,ZZZZZZZZZZZZZZZZZ", "no such drop reason in this kernel (pktfate trace --list-reasons lists them)"},
	} {
		var out, errb bytes.Buffer
		rc := realMain([]string{"trace", "--filter-reason", tc.reason, "--duration", "1ms"}, &out, &errb)
		msg := errb.String()
		if rc != 2 || !strings.Contains(msg, tc.want) || len(msg) > 200 || strings.Count(msg, "\n") != 1 {
			t.Errorf("--filter-reason %s: rc %d, stderr %q, want one short line saying %q", tc.reason, rc, msg, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if rc := realMain([]string{"trace", "--list-reasons"}, &out, &errb); rc != 0 {
		t.Fatalf("--list-reasons: rc %d: %s", rc, errb.String())
	}
	names := strings.Fields(out.String())
	if !slices.Contains(names, "NO_SOCKET") || !slices.Contains(names, "NETFILTER_DROP") {
		t.Errorf("--list-reasons lacks common reasons: %v", names)
	}
	for _, internal := range []string{"MAX", "SUBSYS_MASK", "NOT_DROPPED_YET", "CONSUMED"} {
		if slices.Contains(names, internal) {
			t.Errorf("--list-reasons offers the internal %s", internal)
		}
	}
}

func TestParseReasons(t *testing.T) {
	known := []string{"NOT_DROPPED_YET", "CONSUMED", "NOT_SPECIFIED", "NO_SOCKET", "SOCKET_FILTER", "NETFILTER_DROP", "MAX", "SUBSYS_MASK"}
	got, err := parseReasons("no_socket, SKB_DROP_REASON_NETFILTER_DROP,SUBSYS_OPENVSWITCH:5", known)
	if err != nil || !got["NO_SOCKET"] || !got["NETFILTER_DROP"] || !got["SUBSYS_OPENVSWITCH:5"] || len(got) != 3 {
		t.Errorf("parseReasons: %v, %v", got, err)
	}
	// Nothing internal is offered, however near.
	for _, in := range []string{"MAXX", "SUBSYS_MAS", "NOT_DROPPED_YE", "CONSUMEDX"} {
		_, err := parseReasons(in, known)
		if err == nil {
			t.Fatalf("%s accepted", in)
		}
		for _, bad := range []string{"MAX?", "MAX,", "SUBSYS_MASK", "NOT_DROPPED_YET", "CONSUMED?"} {
			if strings.Contains(err.Error(), bad) && !strings.Contains(in, strings.TrimRight(bad, "?,")) {
				t.Errorf("%s: offers an internal name: %v", in, err)
			}
		}
		if strings.Contains(err.Error(), "did you mean MAX") || strings.Contains(err.Error(), "did you mean SUBSYS_MASK") ||
			strings.Contains(err.Error(), "NOT_DROPPED_YET?") || strings.Contains(err.Error(), "CONSUMED?") {
			t.Errorf("%s: offers an internal name: %v", in, err)
		}
	}
}

// TestTraceFlags: tcpdump's short flags, -v counted, -vv wide, the fate
// in any case, --filter-netns repeated and comma-separated.
func TestTraceFlags(t *testing.T) {
	cfg, err := parseTrace([]string{"-i", "eth0", "-c", "5", "-w", "x.pcapng", "-n", "-v", "-v", "--filter-fate", "DROP",
		"--filter-netns", "a", "--filter-netns", "b,c", "--utc", "udp", "port", "53"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FilterIfname != "eth0" || cfg.Count != 5 || cfg.OutputPcapng != "x.pcapng" || !cfg.Numeric || cfg.Verbose != 2 || !cfg.Wide ||
		cfg.FilterFate != "drop" || strings.Join(cfg.FilterNetns, " ") != "a b c" || !cfg.UTC || cfg.Expr != "udp port 53" {
		t.Errorf("parsed %+v", cfg)
	}
	cfg, err = parseTrace([]string{"-vv"}, io.Discard)
	if err != nil || cfg.Verbose != 2 || !cfg.Wide {
		t.Errorf("-vv: %+v %v", cfg, err)
	}
	cfg, err = parseTrace([]string{"-v"}, io.Discard)
	if err != nil || cfg.Verbose != 1 || cfg.Wide {
		t.Errorf("-v: %+v %v", cfg, err)
	}
	cfg, err = parseTrace([]string{"--filter-reason", "NO_SOCKET"}, io.Discard)
	if err != nil || cfg.FilterFate != "drop" {
		t.Errorf("--filter-reason alone traces drops only: %+v %v", cfg, err)
	}
	var errb bytes.Buffer
	if _, err := parseTrace([]string{"-h"}, &errb); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(errb.String(), "  -i, --filter-ifname IFNAME") || !strings.Contains(errb.String(), "  -w, --output-pcapng FILE") ||
		!strings.Contains(errb.String(), "  -c, --count N") || strings.Contains(errb.String(), "\n  -i ") {
		t.Errorf("-h: %v\n%s", err, errb.String())
	}
}

func TestNearest(t *testing.T) {
	names := []string{"NO_SOCKET", "SOCKET_FILTER", "NETFILTER_DROP", "NOT_SPECIFIED", "OTHERHOST"}
	for in, want := range map[string]string{
		"NO_SOCKT":  "NO_SOCKET",
		"nosocket":  "NO_SOCKET",
		"NETFILTER": "NETFILTER_DROP",
		"QQQQQQQQ":  "",
	} {
		got := strings.Join(nearest(in, names, 3), ",")
		if got != want {
			t.Errorf("nearest(%q) = %q, want %q", in, got, want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance = %d", d)
	}
}

func TestParseMark(t *testing.T) {
	for _, tc := range []struct {
		in         string
		mark, mask uint32
	}{
		{"", 0, 0},
		{"16", 16, 0xffffffff},
		{"0x10/0xff", 0x10, 0xff},
		{"0x1ff/0xff", 0xff, 0xff},
	} {
		m, k, err := parseMark(tc.in)
		if err != nil || m != tc.mark || k != tc.mask {
			t.Errorf("parseMark(%q) = %#x, %#x, %v; want %#x, %#x", tc.in, m, k, err, tc.mark, tc.mask)
		}
	}
}

func TestOutputFileNotWritable(t *testing.T) {
	cfg := traceConfig{OutputFile: filepath.Join(t.TempDir(), "missing-dir", "out.ndjson")}
	_, err := openSinks(cfg, []string{"ebpf"}, 0, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--output-file not writable") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("openSinks to a missing directory: %v", err)
	}
}

// TestOutputsDistinct: two outputs naming one file are refused before
// anything is attached, however the path is spelt.
func TestOutputsDistinct(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cap")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--output-file", p, "--output-pcapng", p},
		{"--output-file", p, "--record", dir + "/./cap"},
		{"--output-pcapng", dir + "/new", "--ready-file", dir + "/new"},
	} {
		_, err := parseTrace(args, io.Discard)
		if !errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "name the same file") {
			t.Errorf("%v: %v, want a usage error naming the clash", args, err)
		}
	}
	if _, err := parseTrace([]string{"--output-file", p, "--output-pcapng", p + ".pcapng"}, io.Discard); err != nil {
		t.Errorf("distinct files refused: %v", err)
	}
}
