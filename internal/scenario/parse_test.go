package scenario

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestParseLibrary parses every scenario of the library.
func TestParseLibrary(t *testing.T) {
	scenarios, err := Load([]string{"../../testdata/scenarios"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(scenarios) < 12 {
		t.Errorf("the library has %d scenarios, want at least 12", len(scenarios))
	}
	for _, s := range scenarios {
		if base := strings.TrimSuffix(filepath.Base(s.File), ".yaml"); base != s.Name {
			t.Errorf("%s: the file is named after its scenario, %q", s.File, s.Name)
		}
	}
}

func TestParseGood(t *testing.T) {
	s, err := ParseFile("testdata/broken-expectation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "broken-expectation" || strings.Join(s.Trace, ",") != "server" || len(s.Namespaces) != 2 || len(s.Veths) != 1 {
		t.Fatalf("parsed %+v", s)
	}
	v := s.Veths[0]
	if v.A.Netns != "client" || v.A.Name != "c0" || v.B.Addrs[0] != netip.MustParsePrefix("192.0.2.2/24") {
		t.Errorf("veth %+v", v)
	}
	if len(s.Traffic) != 1 || s.Traffic[0].Count != 2 || s.Traffic[0].To != netip.MustParseAddrPort("192.0.2.2:9") {
		t.Errorf("traffic %+v", s.Traffic)
	}
	x := s.Expect[0]
	if x.Fate != "drop" || len(x.Reasons) != 1 || x.Reasons[0] != "NETFILTER_DROP" || x.Count == nil || *x.Count != 2 ||
		x.Match.Dport != 9 || x.Match.Proto != "udp" {
		t.Errorf("expectation %+v", x)
	}

	s, err = Parse("inline.yaml", []byte(`
name: inline
description: defaults and alternatives
topology:
  namespaces:
    - name: a
      sysctls: [net.ipv4.ip_forward=1]
      routes: [{to: default, dev: lo}]
trace: a
rules:
  - {netns: a, tool: iptables-legacy, commands: ["-A INPUT -p udp -j DROP"]}
traffic:
  - {from: a, proto: icmp, to: "::1"}
expect:
  - match: {proto: icmp6, icmp_type: 128}
    fate: drop
    reason: [SKB_DROP_REASON_IP_INHDR, NOT_SPECIFIED]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Expect[0]; got.Name != "expect[0]" || got.MinCount != 1 || got.Count != nil ||
		strings.Join(got.Reasons, ",") != "IP_INHDR,NOT_SPECIFIED" || *got.Match.ICMPType != 128 {
		t.Errorf("expectation %+v", got)
	}
	if s.Timeout.Seconds() != 5 || s.Traffic[0].Count != 1 || s.Namespaces[0].Sysctls[0] != (Sysctl{Key: "net.ipv4.ip_forward", Value: "1"}) {
		t.Errorf("defaults %+v", s)
	}
	if c := s.Rules[0].Commands[0]; strings.Join(c, " ") != "-A INPUT -p udp -j DROP" || len(c) != 6 {
		t.Errorf("commands %q", c)
	}
}

// TestParseBad checks every file in testdata/bad is rejected with errors
// naming the file, the line and the field. Each file lists the errors it
// must produce in "# want: LINE: FIELD: MESSAGE" comments.
func TestParseBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 8 {
		t.Fatalf("found %d bad files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
					wants = append(wants, f+":"+w)
				}
			}
			if len(wants) == 0 {
				t.Fatal("no # want: comment")
			}
			_, err = ParseFile(f)
			if err == nil {
				t.Fatal("parsed without error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error is not a *FieldError: %v", err)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(wants) {
				t.Errorf("%d errors, want %d:\n%v", n, len(wants), err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load([]string{"testdata/bad"}, nil)
	if err == nil || !strings.Contains(err.Error(), "testdata/bad/syntax.yaml:") || !strings.Contains(err.Error(), "testdata/bad/several.yaml:") {
		t.Errorf("Load of a directory of bad files: %v", err)
	}
	if _, err := Load([]string{"testdata/nonexistent.yaml"}, nil); err == nil || !strings.Contains(err.Error(), "testdata/nonexistent.yaml: reading scenario: no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load([]string{"testdata/broken-expectation.yaml", "testdata/broken-expectation.yaml"}, nil); err == nil || !strings.Contains(err.Error(), "is also the name of") {
		t.Errorf("duplicate names: %v", err)
	}
}

// TestParseLanguage reads every construct of the language once.
func TestParseLanguage(t *testing.T) {
	s, err := Parse("lang.yaml", []byte(`
name: lang
description: every construct
complete: true
topology:
  namespaces:
    - name: a
      sysctls: ["-net.bridge.bridge-nf-call-iptables=0", net.ipv4.ip_forward=1]
      routes: [{to: 198.51.100.0/24, dev: br0}]
    - name: b
  veths:
    - a: {netns: a, name: a0, mtu: 1280}
      b: {netns: b, name: b0, addrs: [192.0.2.2/24]}
  devices:
    - {netns: a, name: br0, type: bridge, args: "stp_state 0 group_address '01:80:c2:00:00:00'", ports: [a0], addrs: [192.0.2.1/24]}
trace: [a, b]
rules:
  - netns: a
    tool: iptables-legacy
    commands: ["-A INPUT -m comment --comment \"two words\" -j DROP", "-A OUTPUT -m comment --comment 'it''s' -j ACCEPT"]
listen:
  - {name: rx, netns: b, proto: udp, addr: "192.0.2.2:5000", read: false}
  - {netns: b, proto: tcp, addr: "192.0.2.2:5001", accept: reset, backlog: 0}
traffic:
  - {from: a, proto: udp, to: "192.0.2.2:5000", fragments: [{offset: 0, length: 800}, {offset: 800, length: 624}], size: 1400}
  - {close: rx}
  - {from: a, proto: tcp, to: "192.0.2.2:5001", tcp_flags: SF}
  - {from: a, proto: tcp, to: "192.0.2.2:5001", data: out_of_window}
  - {from: a, proto: tcp, to: "192.0.2.2:5001"}
expect:
  - match: {proto: tcp, tcp_flags: R}
    fate: drop
    hook: FORWARD
    family: [bridge, ipv4]
    netns: a
    iface: a0
    known_gap:
      - {why: not seen on old kernels, kernel: "<6.12"}
      - elsewhere not seen either
  - match: {dport: 5000}
    fate: drop
    known_gap: {why: only on 7.2, kernel: ">=7.2"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Complete || strings.Join(s.Trace, ",") != "a,b" || !s.TracesSeveral() {
		t.Errorf("header %+v", s)
	}
	if sc := s.Namespaces[0].Sysctls; !sc[0].Optional || sc[0].Key != "net.bridge.bridge-nf-call-iptables" || sc[1].Optional {
		t.Errorf("sysctls %+v", sc)
	}
	if s.Veths[0].A.MTU != 1280 {
		t.Errorf("veth %+v", s.Veths[0])
	}
	d := s.Devices[0]
	if d.Type != "bridge" || strings.Join(d.Args, "|") != "stp_state|0|group_address|01:80:c2:00:00:00" || d.Ports[0] != "a0" || len(d.Addrs) != 1 {
		t.Errorf("device %+v", d)
	}
	if c := s.Rules[0].Commands; c[0][5] != "two words" || c[1][5] != "its" {
		t.Errorf("commands %q", c)
	}
	if l := s.Listen; l[0].Name != "rx" || l[0].Mode != ModeNone || l[0].Backlog != -1 || l[1].Mode != ModeReset || l[1].Backlog != 0 {
		t.Errorf("listeners %+v", l)
	}
	tr := s.Traffic
	if len(tr[0].Fragments) != 2 || tr[0].Fragments[1] != (Fragment{800, 624}) || tr[1].Close != "rx" ||
		tr[2].TCPFlags != 0x03 || tr[2].Data != "" || tr[3].Data != DataOutOfWindow || tr[4].Data != DataNow {
		t.Errorf("traffic %+v", tr)
	}
	x := s.Expect[0]
	if x.Match.TCPFlags != 0x04 || strings.Join(x.Family, ",") != "bridge,ipv4" || x.Netns != "a" || x.Iface != "a0" || len(x.Gaps) != 2 {
		t.Errorf("expectation %+v", x)
	}
	for release, want := range map[string]string{"6.1.0": "not seen on old kernels", "6.18.44": "elsewhere not seen either"} {
		if g := x.GapOn(release); g == nil || g.Why != want {
			t.Errorf("gap on %s: %+v, want %q", release, g, want)
		}
	}
	if g := s.Expect[1].GapOn("6.12.1"); g != nil {
		t.Errorf("gap limited to 7.2 applies on 6.12: %+v", g)
	}
}

func TestSplitWords(t *testing.T) {
	for in, want := range map[string]string{
		`a b  c`:              "a|b|c",
		`'a b' "c d" e\ f`:    "a b|c d|e f",
		`"a \"q\" \\ \$" x`:   `a "q" \ $|x`,
		`--comment='x y'z`:    "--comment=x yz",
		`{ } ! # in-word#ok`:  "", // a leading # is refused below
		`tc qdisc add dev c0`: "tc|qdisc|add|dev|c0",
		`''`:                  "",
	} {
		got, err := splitWords(in)
		if in == `{ } ! # in-word#ok` {
			if err == nil {
				t.Errorf("%q: a comment is refused", in)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("splitWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := splitWords(`a in-word#ok`); err != nil || got[1] != "in-word#ok" {
		t.Errorf("# inside a word: %q %v", got, err)
	}
	for _, in := range []string{`a | b`, `a; b`, `a && b`, `a > f`, `$(x)`, "`x`", `"a`, `'a`, `a\`, `"$X"`} {
		if _, err := splitWords(in); err == nil {
			t.Errorf("splitWords(%q) accepted", in)
		}
	}
}

// Reasons are checked against the running kernel's names too: one that
// only it has is accepted; an expectation for it that names none it has
// is bad input, unless a kernel range or an alternative covers it.
func TestLoadKernelReasons(t *testing.T) {
	dir := t.TempDir()
	write := func(name, expect string) string {
		p := filepath.Join(dir, name+".yaml")
		body := "name: " + name + "\ndescription: reasons\ntopology:\n  namespaces: [{name: a}]\ntrace: a\n" +
			"traffic:\n  - {from: a, proto: udp, to: \"127.0.0.1:9\"}\nexpect:\n" + expect
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := &Kernel{Release: "6.1.0-50-amd64", Reasons: []string{"NOT_SPECIFIED", "NO_SOCKET", "BRAND_NEW"}}
	for _, tc := range []struct {
		name, expect, want string
	}{
		{"missing", "  - {match: {dport: 9}, fate: drop, reason: FRAG_REASM_TIMEOUT}\n",
			"missing.yaml:9: expect[0].reason: this kernel (6.1.0-50-amd64) has none of these drop reasons (FRAG_REASM_TIMEOUT is in 6.12, 6.18, 7.2): list the reason this kernel gives too, or limit the expectation with kernel:"},
		{"alternative", "  - {match: {dport: 9}, fate: drop, reason: [FRAG_REASM_TIMEOUT, NOT_SPECIFIED]}\n", ""},
		{"limited", "  - {match: {dport: 9}, fate: drop, reason: FRAG_REASM_TIMEOUT, kernel: \">=6.12\"}\n", ""},
		{"running-only", "  - {match: {dport: 9}, fate: drop, reason: BRAND_NEW}\n", ""},
		{"nowhere", "  - {match: {dport: 9}, fate: drop, reason: NO_SOCKETS}\n",
			"nowhere.yaml:9: expect[0].reason: NO_SOCKETS: neither this kernel (6.1.0-50-amd64) nor a supported one (6.1, 6.12, 6.18, 7.2) has this drop reason; did you mean NO_SOCKET?"},
	} {
		_, err := Load([]string{write(tc.name, tc.expect)}, old)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.HasSuffix(err.Error(), tc.want)):
			t.Errorf("%s: %v\nwant %s", tc.name, err, tc.want)
		}
	}
	// Without the kernel, a name only it has is unknown.
	if _, err := Load([]string{filepath.Join(dir, "running-only.yaml")}, nil); err == nil || !strings.Contains(err.Error(), "BRAND_NEW: no supported kernel") {
		t.Errorf("offline: %v", err)
	}
}

// Every reason of the library exists on a supported kernel, and every
// hook name it uses is one the model defines.
func TestLibraryNames(t *testing.T) {
	scenarios, err := Load([]string{"../../testdata/scenarios"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scenarios {
		for _, x := range s.Expect {
			if x.Hook != "" && x.Hook != "none" && !slices.Contains(hookNames(""), x.Hook) {
				t.Errorf("%s: %s: hook %s", s.Name, x.Name, x.Hook)
			}
		}
	}
	if len(kernelReasons["NO_SOCKET"]) != len(kernelLines) {
		t.Errorf("NO_SOCKET is on %v, want every line %v", kernelReasons["NO_SOCKET"], kernelLines)
	}
}
