package scenario

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
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
