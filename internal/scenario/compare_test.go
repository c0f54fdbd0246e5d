package scenario

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/fate"
)

var (
	server = netip.MustParseAddr("192.0.2.2")
	both   = Env{Running: []string{"ebpf", "nf"}}
)

func intp(n int) *int { return &n }

func closedPort(count *int) *Scenario {
	return &Scenario{Name: "closed", File: "closed.yaml", Expect: []Expectation{{
		Name: "closed port", Match: Match{Proto: "udp", Dst: server, Dport: 9},
		Fate: "drop", Reasons: []string{"NO_SOCKET"}, Hook: "none", Functions: []string{"__udp4_lib_rcv"},
		Count: count, MinCount: 1, ConfirmedBy: []string{"ebpf"},
	}}}
}

func udp(dport uint16, fate, reason, fn, hook string, observers ...string) *Observed {
	return &Observed{Fate: fate, Reason: reason, Function: fn, Hook: hook, Observers: observers,
		Proto: "udp", Src: netip.MustParseAddr("192.0.2.1"), Dst: server, Sport: 40000, Dport: dport}
}

func TestCheckPass(t *testing.T) {
	obs := []*Observed{
		udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf"),
		udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf"),
		udp(10, "drop", "NETFILTER_DROP", "nft_do_chain", "LOCAL_IN", "ebpf", "nf"), // not selected
	}
	r := Check(closedPort(intp(2)), obs, both, nil, "")
	if r.Status != StatusPass || len(r.Regressions) != 0 {
		t.Fatalf("got %s %q", r.Status, r.Regressions)
	}
	if g := r.Observed["closed port"]; len(g) != 1 || g[0].Count != 2 || g[0].Reason != "NO_SOCKET" {
		t.Errorf("observed %+v", g)
	}
}

func TestCheckRegression(t *testing.T) {
	for _, tc := range []struct {
		name  string
		count *int
		obs   []*Observed
		want  string
	}{
		{"missing", nil, nil, "closed port: for udp dst 192.0.2.2 dport 9 expected drop NO_SOCKET in __udp4_lib_rcv outside netfilter confirmed by ebpf; 0 did, no packet matching it was seen"},
		{"other reason", nil, []*Observed{udp(9, "drop", "NETFILTER_DROP", "nft_do_chain", "LOCAL_IN", "ebpf", "nf")},
			"0 did, saw 1 × drop NETFILTER_DROP in nft_do_chain at hook LOCAL_IN [ebpf+nf]"},
		{"other function", nil, []*Observed{udp(9, "drop", "NO_SOCKET", "udp_rcv", "", "ebpf")}, "saw 1 × drop NO_SOCKET in udp_rcv [ebpf]"},
		{"consumed", nil, []*Observed{udp(9, "consume", "", "skb_consume_udp", "", "ebpf")}, "saw 1 × consume in skb_consume_udp [ebpf]"},
		{"in a hook", nil, []*Observed{udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "LOCAL_IN", "ebpf", "nf")}, "0 did"},
		{"unconfirmed", nil, []*Observed{udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "nf")}, "0 did"},
		{"too many", intp(1), []*Observed{udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf"), udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf")},
			"expected exactly 1 × drop NO_SOCKET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(closedPort(tc.count), tc.obs, both, nil, "")
			if r.Status != StatusFail || len(r.Regressions) != 1 || !strings.Contains(r.Regressions[0], tc.want) {
				t.Errorf("got %s %q, want a regression containing %q", r.Status, r.Regressions, tc.want)
			}
		})
	}
}

// A fate that must not happen (count: 0) fails when it does.
func TestCheckMustNotHappen(t *testing.T) {
	s := &Scenario{Name: "open", Expect: []Expectation{{Name: "open port", Match: Match{Dport: 5000}, Fate: "drop", Count: intp(0)}}}
	if r := Check(s, []*Observed{udp(5000, "consume", "", "udp_recvmsg", "", "ebpf")}, both, nil, ""); r.Status != StatusPass {
		t.Errorf("consumed: %s %q", r.Status, r.Regressions)
	}
	r := Check(s, []*Observed{udp(5000, "drop", "SOCKET_RCVBUFF", "udp_queue_rcv_one_skb", "", "ebpf")}, both, nil, "")
	if r.Status != StatusFail || !strings.Contains(r.Regressions[0], "expected exactly 0 × drop; 1 did, saw 1 × drop SOCKET_RCVBUFF") {
		t.Errorf("dropped: %s %q", r.Status, r.Regressions)
	}
}

// Without the netfilter attribution, hooks and nf confirmations cannot be
// checked: they are noted, not failed.
func TestCheckWithoutNF(t *testing.T) {
	s := &Scenario{Name: "nft", Expect: []Expectation{{Name: "rule", Match: Match{Dport: 7777}, Fate: "drop",
		Reasons: []string{"NETFILTER_DROP"}, Hook: "LOCAL_IN", MinCount: 1, ConfirmedBy: []string{"ebpf", "nf"}}}}
	r := Check(s, []*Observed{udp(7777, "drop", "NETFILTER_DROP", "nft_do_chain", "", "ebpf")}, Env{Running: []string{"ebpf"}}, nil, "")
	if r.Status != StatusPass || len(r.Notes) != 2 || !strings.Contains(r.Notes[0], "hook not checked") {
		t.Errorf("got %s %q %q", r.Status, r.Regressions, r.Notes)
	}
}

func TestMatch(t *testing.T) {
	icmp := &Observed{Proto: "icmp", Dst: server, ICMPType: 8}
	eight, zero := uint8(8), uint8(0)
	for _, tc := range []struct {
		m    Match
		o    *Observed
		want bool
	}{
		{Match{Proto: "icmp", ICMPType: &eight}, icmp, true},
		{Match{Proto: "icmp", ICMPType: &zero}, icmp, false},
		{Match{ICMPType: &zero}, udp(9, "drop", "", "", ""), false},
		{Match{Dst: server, Dport: 9}, udp(9, "drop", "", "", ""), true},
		{Match{Src: server}, udp(9, "drop", "", "", ""), false},
		{Match{Proto: "tcp"}, udp(9, "drop", "", "", ""), false},
	} {
		if got := tc.m.Matches(tc.o); got != tc.want {
			t.Errorf("%s matches %+v: %v, want %v", tc.m, tc.o, got, tc.want)
		}
	}
}

func baseline(groups ...Group) *BaselineScenario {
	return &BaselineScenario{Observed: map[string][]Group{"ttl": groups}}
}

func TestCheckBaseline(t *testing.T) {
	s := &Scenario{Name: "ttl", Expect: []Expectation{{Name: "ttl", Match: Match{Dport: 33434}, Fate: "drop",
		Reasons: []string{"IP_INHDR", "NOT_SPECIFIED"}, MinCount: 1}}}
	now := []*Observed{udp(33434, "drop", "IP_INHDR", "ip_forward", "", "ebpf")}
	for _, tc := range []struct {
		name                      string
		base                      *BaselineScenario
		regression, improve, note string
	}{
		{name: "same", base: baseline(Group{Fate: "drop", Reason: "IP_INHDR", Function: "ip_forward", Count: 5})},
		{name: "more specific reason", base: baseline(Group{Fate: "drop", Reason: "NOT_SPECIFIED", Function: "ip_forward"}),
			improve: "ttl: drop reason NOT_SPECIFIED on 6.1.0 is now IP_INHDR (drop IP_INHDR in ip_forward)"},
		{name: "location moved", base: baseline(Group{Fate: "drop", Reason: "IP_INHDR", Function: "ip_forward_finish"}),
			note: "ttl: location moved from ip_forward_finish on 6.1.0 to ip_forward"},
		{name: "other reason", base: baseline(Group{Fate: "drop", Reason: "IP_INADDRERRORS", Function: "ip_forward"}),
			regression: "ttl: was drop IP_INADDRERRORS in ip_forward on 6.1.0, now drop IP_INHDR in ip_forward"},
		{name: "gone", base: baseline(Group{Fate: "drop", Reason: "IP_INHDR", Function: "ip_forward"}, Group{Fate: "drop", Reason: "NO_SOCKET", Function: "__udp4_lib_rcv"}),
			regression: "ttl: drop NO_SOCKET in __udp4_lib_rcv (seen on 6.1.0) no longer happens"},
		{name: "consume gone", base: baseline(Group{Fate: "drop", Reason: "IP_INHDR", Function: "ip_forward"}, Group{Fate: "consume", Function: "icmp_send"}),
			note: "ttl: consume in icmp_send (seen on 6.1.0) no longer happens"},
		{name: "new", base: baseline(), note: "ttl: new fate drop IP_INHDR in ip_forward, not seen on 6.1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(s, now, both, tc.base, "6.1.0")
			check := func(kind string, got []string, want string) {
				t.Helper()
				if want == "" && len(got) > 0 || want != "" && (len(got) != 1 || got[0] != want) {
					t.Errorf("%s: got %q, want %q", kind, got, want)
				}
			}
			check("regressions", r.Regressions, tc.regression)
			check("improvements", r.Improvements, tc.improve)
			check("changes", r.Changes, tc.note)
			if want := map[bool]Status{true: StatusFail, false: StatusPass}[tc.regression != ""]; r.Status != want {
				t.Errorf("status %s, want %s", r.Status, want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	pass := &Result{Name: "s", Status: StatusPass, Seconds: 1}
	fail := &Result{Name: "s", Status: StatusFail, Regressions: []string{"x: 0 did"}, Seconds: 2}
	errored := &Result{Name: "s", Status: StatusError, Error: "setting up: boom", Seconds: 1}
	if r := Retry(pass, nil); r != pass {
		t.Error("a pass is kept")
	}
	if r := Retry(fail, &Result{Name: "s", Status: StatusFail, Regressions: []string{"x: again"}, Seconds: 2}); r.Status != StatusFail || r.Regressions[0] != "x: again" || r.Seconds != 4 {
		t.Errorf("failing twice: %+v", r)
	}
	r := Retry(fail, pass)
	if r.Status != StatusFlake || len(r.FirstAttempt) != 1 || r.FirstAttempt[0] != "x: 0 did" || r.Seconds != 3 {
		t.Errorf("fail then pass: %+v", r)
	}
	if pass.Status != StatusPass {
		t.Error("Retry changed its argument")
	}
	if r := Retry(errored, pass); r.Status != StatusFlake || r.FirstAttempt[0] != "error: setting up: boom" {
		t.Errorf("error then pass: %+v", r)
	}
}

func TestBaselineUpdate(t *testing.T) {
	b := &Baseline{Scenarios: map[string]*BaselineScenario{"failing": baseline(Group{Fate: "drop"})}}
	b.Update("6.18", []*Result{
		{Name: "ok", Status: StatusPass, Observed: map[string][]Group{"e": {{Fate: "drop", Count: 1}}}},
		{Name: "failing", Status: StatusFail, Observed: map[string][]Group{}},
	})
	if b.Kernel != "6.18" || b.Scenarios["ok"] == nil || len(b.Scenarios["failing"].Observed["ttl"]) != 1 {
		t.Errorf("updated %+v", b)
	}
	path := t.TempDir() + "/b.json"
	if err := b.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBaseline(path)
	if err != nil || got.Kernel != "6.18" || got.Scenarios["ok"].Observed["e"][0].Count != 1 {
		t.Errorf("read back %+v, %v", got, err)
	}
}

func TestKernelRange(t *testing.T) {
	for _, tc := range []struct {
		rng, release string
		want         bool
	}{
		{">=6.3", "6.12.95+deb12-amd64", true},
		{">=6.3", "6.1.0-50-amd64", false},
		{"<6.3", "6.1.0-50-amd64", true},
		{"<6.3", "7.2.1", false},
		{"==6.18", "6.18.44-fc-v657", true},
		{"<=6.1", "6.1.0", true},
		{">6.1", "6.1.0", false},
		{">=6.3", "weird", true},
	} {
		k, err := parseKernelRange(tc.rng)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Contains(tc.release); got != tc.want {
			t.Errorf("%s contains %s: %v, want %v", tc.rng, tc.release, got, tc.want)
		}
	}
	s := &Scenario{Expect: []Expectation{{Name: "new", Match: Match{Dport: 9}, Fate: "consume", MinCount: 1, Kernel: &KernelRange{">=", 6, 3}}}}
	if r := Check(s, nil, Env{Kernel: "6.1.0"}, nil, ""); r.Status != StatusPass || len(r.Observed) != 0 {
		t.Errorf("an expectation for other kernels is skipped: %+v", r)
	}
	if r := Check(s, nil, Env{Kernel: "6.12.0"}, nil, ""); r.Status != StatusFail {
		t.Errorf("an expectation for this kernel applies: %+v", r)
	}
}

func TestBaseFunction(t *testing.T) {
	for in, want := range map[string]string{
		"ip_rcv_finish_core.constprop.0": "ip_rcv_finish_core",
		"tcp_v4_rcv":                     "tcp_v4_rcv",
		"__udp4_lib_rcv.isra.0":          "__udp4_lib_rcv",
		"":                               "",
	} {
		if got := baseFunction(in); got != want {
			t.Errorf("baseFunction(%q) = %q, want %q", in, got, want)
		}
	}
}

// A known gap that does not hold is reported as such, not as a
// regression; one that holds is a gap closed; on kernels outside its
// range it is an ordinary expectation.
func TestCheckKnownGap(t *testing.T) {
	gap := func(k *KernelRange) *Scenario {
		s := closedPort(intp(2))
		s.Expect[0].Gaps = []KnownGap{{Why: "the drop is not seen yet", Kernel: k}}
		return s
	}
	two := []*Observed{udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf"), udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf")}
	env := Env{Running: []string{"ebpf", "nf"}, Kernel: "6.18.44"}

	r := Check(gap(nil), nil, env, nil, "")
	if r.Status != StatusGap || len(r.Regressions) != 0 || len(r.Gaps) != 1 || r.Gaps[0].Expectation != "closed port" ||
		r.Gaps[0].Why != "the drop is not seen yet" || !strings.Contains(r.Gaps[0].Detail, "0 did, no packet matching it was seen") {
		t.Errorf("gap not met: %s %q %+v", r.Status, r.Regressions, r.Gaps)
	}
	if !r.Status.Passed() {
		t.Error("a known gap passes")
	}
	r = Check(gap(nil), two, env, nil, "")
	if r.Status != StatusPass || len(r.Gaps) != 0 || len(r.GapsClosed) != 1 || !strings.Contains(r.GapsClosed[0], "remove its known_gap") {
		t.Errorf("gap met: %s %+v %q", r.Status, r.Gaps, r.GapsClosed)
	}
	r = Check(gap(&KernelRange{"<", 6, 12}), nil, env, nil, "")
	if r.Status != StatusFail || len(r.Regressions) != 1 {
		t.Errorf("gap on other kernels only: %s %q", r.Status, r.Regressions)
	}
	// A regression elsewhere fails the scenario, gaps or not.
	s := gap(nil)
	s.Expect = append(s.Expect, Expectation{Name: "other", Match: Match{Dport: 10}, Fate: "drop", MinCount: 1})
	if r := Check(s, nil, env, nil, ""); r.Status != StatusFail || len(r.Gaps) != 1 || len(r.Regressions) != 1 {
		t.Errorf("gap and regression: %s %q %+v", r.Status, r.Regressions, r.Gaps)
	}
	// Differences from the baseline in a known gap are changes.
	base := &BaselineScenario{Observed: map[string][]Group{"closed port": {{Fate: "drop", Reason: "NO_SOCKET", Function: "__udp4_lib_rcv"}}}}
	if r := Check(gap(nil), nil, env, base, "6.12"); len(r.Regressions) != 0 || len(r.Changes) != 1 || !strings.Contains(r.Changes[0], "(a known gap)") {
		t.Errorf("gap against a baseline: %q %q", r.Regressions, r.Changes)
	}
}

// An observer blind to a packet (it says why) cannot confirm it nor give
// its hook: that is noted, not failed.
func TestCheckBlindObserver(t *testing.T) {
	s := &Scenario{Name: "br", Expect: []Expectation{{Name: "bridge", Match: Match{Dport: 7777}, Fate: "drop", Reasons: []string{"NETFILTER_DROP"},
		Hook: "FORWARD", Family: []string{"bridge"}, MinCount: 1, ConfirmedBy: []string{"ebpf", "nf"}}}}
	o := udp(7777, "drop", "NETFILTER_DROP", "nft_do_chain", "", "ebpf")
	o.Blind = map[string]string{"nf": "no link type for the bridge family"}
	r := Check(s, []*Observed{o}, both, nil, "")
	if r.Status != StatusPass || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "hook not checked: nf is blind to these packets: no link type for the bridge family") {
		t.Errorf("blind: %s %q %q", r.Status, r.Regressions, r.Notes)
	}
	// Not blind: the hook and family are checked.
	o = udp(7777, "drop", "NETFILTER_DROP", "nft_do_chain", "FORWARD", "ebpf", "nf")
	o.Family = "ipv4"
	if r := Check(s, []*Observed{o}, both, nil, ""); r.Status != StatusFail || !strings.Contains(r.Regressions[0], "at hook FORWARD family bridge") {
		t.Errorf("wrong family: %s %q", r.Status, r.Regressions)
	}
	o.Family = "bridge"
	if r := Check(s, []*Observed{o}, both, nil, ""); r.Status != StatusPass {
		t.Errorf("right family: %s %q", r.Status, r.Regressions)
	}
}

// Where the fate happened: namespace and interface.
func TestCheckWhere(t *testing.T) {
	s := &Scenario{Name: "d", Trace: []string{"br", "server"}, Expect: []Expectation{{Name: "read", Match: Match{Dport: 5000}, Fate: "consume",
		Netns: "server", Iface: "s0", Count: intp(1)}}}
	at := func(ns, iface string) *Observed {
		o := udp(5000, "consume", "", "skb_copy_datagram_iovec", "", "ebpf")
		o.Netns, o.Iface = ns, iface
		return o
	}
	for _, tc := range []struct {
		o    *Observed
		pass bool
	}{
		{at("server", "s0"), true},
		{at("br", "s0"), false},
		{at("server", ""), false},
		{at("", "s0"), false},
	} {
		r := Check(s, []*Observed{tc.o}, both, nil, "")
		if r.Status.Passed() != tc.pass {
			t.Errorf("%s on %q: %s %q", tc.o.Netns, tc.o.Iface, r.Status, r.Regressions)
		}
		if g := r.Observed["read"]; len(g) != 1 || g[0].Netns != tc.o.Netns || g[0].Iface != tc.o.Iface {
			t.Errorf("groups %+v", g)
		}
	}
}

// complete: true fails a capture that lost something or cannot vouch.
func TestCheckComplete(t *testing.T) {
	s := closedPort(nil)
	s.Complete = true
	obs := []*Observed{udp(9, "drop", "NO_SOCKET", "__udp4_lib_rcv", "", "ebpf")}
	env := both
	env.Summary = &CaptureSummary{Lost: []fate.Loss{{Observer: "nf", Name: "inflight_full", Value: 3}, {Observer: "ebpf", Name: "ringbuf_full"}}}
	if r := Check(s, obs, env, nil, ""); r.Status != StatusFail || !strings.Contains(r.Regressions[0], "it is not: nf_inflight_full=3") {
		t.Errorf("lost: %s %q", r.Status, r.Regressions)
	}
	env.Summary = &CaptureSummary{Lost: []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full", Unknown: "map gone"}}}
	if r := Check(s, obs, env, nil, ""); r.Status != StatusFail || !strings.Contains(r.Regressions[0], "ebpf_ringbuf_full unknown (map gone)") {
		t.Errorf("unknown: %s %q", r.Status, r.Regressions)
	}
	env.Summary = &CaptureSummary{Lost: []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full"}}}
	if r := Check(s, obs, env, nil, ""); r.Status != StatusPass {
		t.Errorf("complete: %s %q", r.Status, r.Regressions)
	}
	// While the capture runs (no summary yet) it is not judged.
	env.Summary = nil
	if r := Check(s, obs, env, nil, ""); r.Status != StatusPass {
		t.Errorf("running: %s %q", r.Status, r.Regressions)
	}
}

func TestMatchTCPFlags(t *testing.T) {
	rst := &Observed{Proto: "tcp", TCPFlags: 0x14} // RST ACK
	for _, tc := range []struct {
		flags uint8
		want  bool
	}{{0x04, true}, {0x14, true}, {0x02, false}, {0x06, false}} {
		if got := (Match{TCPFlags: tc.flags}).Matches(rst); got != tc.want {
			t.Errorf("flags %s on RA: %v, want %v", tcpFlagString(tc.flags), got, tc.want)
		}
	}
	if (Match{TCPFlags: 0x04}).Matches(&Observed{Proto: "udp"}) {
		t.Error("TCP flags select TCP only")
	}
}

// A hook the baseline did not know (the attribution was blind there) is
// an improvement; a baseline without families matches any family.
func TestCheckBaselineHook(t *testing.T) {
	s := &Scenario{Name: "nf", Expect: []Expectation{{Name: "ttl", Match: Match{Dport: 7777}, Fate: "drop", MinCount: 1}}}
	o := udp(7777, "drop", "NETFILTER_DROP", "nft_do_chain", "FORWARD", "ebpf", "nf")
	o.Family = "bridge"
	r := Check(s, []*Observed{o}, both, baseline(Group{Fate: "drop", Reason: "NETFILTER_DROP", Function: "nft_do_chain"}), "6.18")
	if len(r.Regressions) != 0 || len(r.Improvements) != 1 || !strings.Contains(r.Improvements[0], "the hook, unknown on 6.18, is now FORWARD") {
		t.Errorf("hook learnt: %q %q", r.Regressions, r.Improvements)
	}
	r = Check(s, []*Observed{o}, both, baseline(Group{Fate: "drop", Reason: "NETFILTER_DROP", Function: "nft_do_chain", Hook: "FORWARD"}), "6.12")
	if len(r.Regressions)+len(r.Changes)+len(r.Improvements) != 0 {
		t.Errorf("old baseline without family: %q %q %q", r.Regressions, r.Changes, r.Improvements)
	}
	r = Check(s, []*Observed{o}, both, baseline(Group{Fate: "drop", Reason: "NETFILTER_DROP", Function: "nft_do_chain", Hook: "FORWARD", Family: "ipv4"}), "6.12")
	if len(r.Regressions) != 1 {
		t.Errorf("family changed: %q", r.Regressions)
	}
}

func TestRetryKnownGap(t *testing.T) {
	gap := &Result{Name: "s", Status: StatusGap, Gaps: []Gap{{Expectation: "x", Why: "y"}}}
	if r := Retry(gap, nil); r != gap {
		t.Error("a known gap is not run again")
	}
	fail := &Result{Name: "s", Status: StatusFail, Regressions: []string{"z: 0 did"}}
	if r := Retry(fail, gap); r.Status != StatusFlake || len(r.Gaps) != 1 {
		t.Errorf("fail then known gap: %+v", r)
	}
}
