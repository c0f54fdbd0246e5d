package scenario

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/pktfate/pktfate/fate"
)

// Observed is one packet's fate as the runner saw it (one fate record, or
// one event when a single observer ran).
type Observed struct {
	Fate     string // drop or consume
	Reason   string
	Hook     string
	Family   string
	Function string
	// Netns is the scenario's name of the namespace the packet met its
	// fate in ("" when unknown); Iface the interface it was on.
	Netns, Iface string
	// Observers that saw the packet.
	Observers []string
	// Blind maps the running observers that could not have seen the
	// packet to why (the source says so: a link type the kernel lacks).
	Blind    map[string]string
	Verdict  string
	Proto    string
	Src, Dst netip.Addr
	Sport    uint16
	Dport    uint16
	ICMPType uint8
	TCPFlags uint8
}

// Matches tells whether the packet is one the match selects.
func (m Match) Matches(o *Observed) bool {
	return (m.Proto == "" || m.Proto == o.Proto) &&
		(!m.Src.IsValid() || m.Src == o.Src) &&
		(!m.Dst.IsValid() || m.Dst == o.Dst) &&
		(m.Sport == 0 || m.Sport == o.Sport) &&
		(m.Dport == 0 || m.Dport == o.Dport) &&
		(m.ICMPType == nil || (o.Proto == "icmp" || o.Proto == "icmp6") && *m.ICMPType == o.ICMPType) &&
		(m.TCPFlags == 0 || o.Proto == "tcp" && o.TCPFlags&m.TCPFlags == m.TCPFlags)
}

// Env is what the checks need to know of the run.
type Env struct {
	// Running names the observers that ran; a hook or confirmation by an
	// observer that did not run cannot be checked (it is noted instead).
	Running []string
	// Kernel is the release the scenario ran on (for expectations limited
	// to some kernels; "" applies all of them).
	Kernel string
	// Summary is the capture's ledger once it has ended (nil before).
	Summary *CaptureSummary
}

// CaptureSummary is what a scenario's capture could not vouch for.
type CaptureSummary struct {
	Lost     []fate.Loss
	Unknowns []string
}

// netfilterChecked tells whether the hook and family of a packet can be
// checked: the attribution runs and is not blind to the packet.
func netfilterChecked(o *Observed, env Env) bool {
	return slices.Contains(env.Running, fate.ObserverNF) && o.Blind[fate.ObserverNF] == ""
}

// satisfies tells whether a packet meets the expected fate.
func (x *Expectation) satisfies(o *Observed, env Env) bool {
	if o.Fate != x.Fate {
		return false
	}
	if len(x.Reasons) > 0 && !slices.Contains(x.Reasons, o.Reason) {
		return false
	}
	if len(x.Functions) > 0 && !slices.Contains(x.Functions, o.Function) {
		return false
	}
	if x.Netns != "" && o.Netns != x.Netns || x.Iface != "" && o.Iface != x.Iface {
		return false
	}
	if netfilterChecked(o, env) {
		switch x.Hook {
		case "":
		case "none":
			if o.Hook != "" {
				return false
			}
		default:
			if o.Hook != x.Hook {
				return false
			}
		}
		if len(x.Family) > 0 && !slices.Contains(x.Family, o.Family) {
			return false
		}
	}
	for _, c := range x.ConfirmedBy {
		if slices.Contains(env.Running, c) && o.Blind[c] == "" && !slices.Contains(o.Observers, c) {
			return false
		}
	}
	return true
}

// Group is a set of packets that met the same fate.
type Group struct {
	Fate     string `json:"fate"`
	Reason   string `json:"reason,omitempty"`
	Hook     string `json:"hook,omitempty"`
	Family   string `json:"family,omitempty"`
	Function string `json:"location,omitempty"`
	// Netns is the scenario's name of the namespace ("" when unknown).
	Netns string `json:"netns,omitempty"`
	// Iface is the interface the packets were on ("" when unknown).
	Iface     string   `json:"iface,omitempty"`
	Observers []string `json:"observers,omitempty"`
	// Blind lists the running observers blind to these packets.
	Blind []string `json:"blind,omitempty"`
	Count int      `json:"count"`
}

func (g Group) key() string {
	return g.Fate + "/" + g.Reason + "/" + g.Hook + "/" + g.Family + "/" + g.Function + "/" + g.Netns + "/" + g.Iface
}

// same tells whether a group seen now is the fate a baseline group
// recorded; a baseline written before families and interfaces were
// recorded matches any.
func (g Group) same(base Group) bool {
	if base.Family == "" && base.Hook != "" {
		g.Family = ""
	}
	if base.Iface == "" {
		g.Iface = ""
	}
	if base.Netns == "" {
		g.Netns = ""
	}
	return g.key() == base.key()
}

// String is "drop NO_SOCKET in __udp4_lib_rcv" (plus the hook).
func (g Group) String() string {
	s := g.Fate
	if g.Reason != "" {
		s += " " + g.Reason
	}
	if g.Function != "" {
		s += " in " + g.Function
	}
	if g.Hook != "" {
		s += " at hook " + g.Hook
		if g.Family != "" {
			s += " (" + g.Family + ")"
		}
	}
	if g.Netns != "" {
		s += " in netns " + g.Netns
	}
	if g.Iface != "" {
		s += " on " + g.Iface
	}
	return s
}

// Summarise groups packets by fate, reason, hook, family, function,
// namespace and interface, most frequent first.
func Summarise(obs []*Observed) []Group {
	idx := map[string]int{}
	var out []Group
	for _, o := range obs {
		g := Group{Fate: o.Fate, Reason: o.Reason, Hook: o.Hook, Family: o.Family, Function: o.Function, Netns: o.Netns, Iface: o.Iface}
		i, ok := idx[g.key()]
		if !ok {
			i = len(out)
			idx[g.key()] = i
			out = append(out, g)
		}
		out[i].Count++
		for _, name := range o.Observers {
			if !slices.Contains(out[i].Observers, name) {
				out[i].Observers = append(out[i].Observers, name)
			}
		}
		for name := range o.Blind {
			if !slices.Contains(out[i].Blind, name) {
				out[i].Blind = append(out[i].Blind, name)
			}
		}
	}
	for i := range out {
		sort.Strings(out[i].Observers)
		sort.Strings(out[i].Blind)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}

func describe(groups []Group) string {
	if len(groups) == 0 {
		return "no packet matching it was seen"
	}
	var parts []string
	for _, g := range groups {
		parts = append(parts, fmt.Sprintf("%d × %s [%s]", g.Count, g, strings.Join(g.Observers, "+")))
	}
	return "saw " + strings.Join(parts, ", ")
}

// Status of a scenario.
type Status string

const (
	StatusPass  Status = "pass"
	StatusFail  Status = "fail"  // a regression: an expectation or the baseline not met
	StatusFlake Status = "flaky" // failed, then passed when run again
	StatusError Status = "error" // could not run (set-up failed)
	// StatusGap: every expectation held but known gaps, which did not.
	StatusGap Status = "known_gap"
)

// Passed tells whether the scenario held: a pass, or known gaps only.
// A flake is not a pass: it passed only when run again.
func (s Status) Passed() bool { return s == StatusPass || s == StatusGap }

// Result is the outcome of one scenario.
type Result struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Status Status `json:"status"`
	// Regressions say what did not happen as expected (or as in the baseline).
	Regressions []string `json:"regressions,omitempty"`
	// Gaps are the known gaps that did not hold, as marked in the
	// scenario: why, and what was seen instead.
	Gaps []Gap `json:"known_gaps,omitempty"`
	// GapsClosed are known gaps that held: the marker can go.
	GapsClosed []string `json:"gaps_closed,omitempty"`
	// Improvements are changes for the better against the baseline (a named
	// drop reason where the baseline had NOT_SPECIFIED).
	Improvements []string `json:"improvements,omitempty"`
	// Changes are differences from the baseline that fail nothing (a new
	// location function, a new fate).
	Changes []string `json:"changes,omitempty"`
	// Notes are checks that could not run and what the senders were told
	// (connection refused, EPERM from a local rule).
	Notes []string `json:"notes,omitempty"`
	// Error is why the scenario could not run.
	Error string `json:"error,omitempty"`
	// FirstAttempt keeps the failure of a flaky scenario's first run.
	FirstAttempt []string `json:"first_attempt,omitempty"`
	// Observed has, per expectation name, the fates of the packets it selects.
	Observed map[string][]Group `json:"observed"`
	Seconds  float64            `json:"seconds"`
}

// Gap is a known gap that did not hold.
type Gap struct {
	Expectation string `json:"expectation"`
	// Why is the scenario's explanation.
	Why string `json:"why"`
	// Detail says what was expected and seen.
	Detail string `json:"detail"`
}

func (g Gap) String() string { return g.Expectation + ": " + g.Why + " (" + g.Detail + ")" }

// Check compares what was observed with a scenario's expectations and,
// when base is not nil, with a baseline recorded earlier (maybe on another
// kernel). It is pure: the runner calls it, tests feed it fixtures.
func Check(s *Scenario, obs []*Observed, env Env, base *BaselineScenario, baseKernel string) *Result {
	res := &Result{Name: s.Name, File: s.File, Status: StatusPass, Observed: map[string][]Group{}}
	for i := range s.Expect {
		x := &s.Expect[i]
		if env.Kernel != "" && !x.Kernel.Contains(env.Kernel) {
			continue
		}
		var selected []*Observed
		n, blind := 0, map[string]string{}
		for _, o := range obs {
			if !x.Match.Matches(o) {
				continue
			}
			selected = append(selected, o)
			if x.satisfies(o, env) {
				n++
			}
			for name, why := range o.Blind {
				blind[name] = why
			}
		}
		groups := Summarise(selected)
		if groups == nil {
			groups = []Group{}
		}
		res.Observed[x.Name] = groups
		ok := n >= x.MinCount
		if x.Count != nil {
			ok = n == *x.Count
		}
		gap := x.GapOn(env.Kernel)
		switch {
		case !ok && gap != nil:
			res.Gaps = append(res.Gaps, Gap{Expectation: x.Name, Why: gap.Why,
				Detail: fmt.Sprintf("for %s expected %s; %d did, %s", x.Match, x.Want(), n, describe(groups))})
		case !ok:
			res.Regressions = append(res.Regressions, fmt.Sprintf("%s: for %s expected %s; %d did, %s",
				x.Name, x.Match, x.Want(), n, describe(groups)))
		case gap != nil:
			res.GapsClosed = append(res.GapsClosed, fmt.Sprintf("%s: holds now (%d × %s): remove its known_gap for this kernel (%s)", x.Name, n, x.Want(), gap.Why))
		}
		res.Notes = append(res.Notes, x.unchecked(env, blind)...)
		if base != nil {
			compareBaseline(res, x.Name, groups, base.Observed[x.Name], baseKernel, gap != nil)
		}
	}
	if s.Complete && env.Summary != nil {
		if lost := incomplete(env.Summary); lost != "" {
			res.Regressions = append(res.Regressions, "the capture must be complete (complete: true), but "+lost)
		}
	}
	switch {
	case len(res.Regressions) > 0:
		res.Status = StatusFail
	case len(res.Gaps) > 0:
		res.Status = StatusGap
	}
	return res
}

// unchecked notes the parts of an expectation that could not be checked:
// observers not running, or blind to the selected packets.
func (x *Expectation) unchecked(env Env, blind map[string]string) []string {
	var notes []string
	nfNeeded := x.Hook != "" || len(x.Family) > 0
	switch {
	case nfNeeded && !slices.Contains(env.Running, fate.ObserverNF):
		notes = append(notes, fmt.Sprintf("%s: hook not checked: the netfilter attribution (nf) is not running", x.Name))
	case nfNeeded && blind[fate.ObserverNF] != "":
		notes = append(notes, fmt.Sprintf("%s: hook not checked: nf is blind to these packets: %s", x.Name, blind[fate.ObserverNF]))
	}
	for _, c := range x.ConfirmedBy {
		switch {
		case !slices.Contains(env.Running, c):
			notes = append(notes, fmt.Sprintf("%s: confirmation by %s not checked: it is not running", x.Name, c))
		case blind[c] != "" && (c != fate.ObserverNF || !nfNeeded):
			notes = append(notes, fmt.Sprintf("%s: confirmation by %s not checked: it is blind to these packets: %s", x.Name, c, blind[c]))
		}
	}
	return notes
}

// incomplete says what a capture lost or cannot vouch for ("" if nothing).
func incomplete(s *CaptureSummary) string {
	var parts []string
	for _, l := range s.Lost {
		switch {
		case l.Unknown != "":
			parts = append(parts, fmt.Sprintf("%s unknown (%s)", l.Key(), l.Unknown))
		case l.Value > 0:
			parts = append(parts, fmt.Sprintf("%s=%d", l.Key(), l.Value))
		}
	}
	parts = append(parts, s.Unknowns...)
	if len(parts) == 0 {
		return ""
	}
	return "it is not: " + strings.Join(parts, ", ")
}

func namedReason(r string) bool { return r != "" && r != "NOT_SPECIFIED" }

// compareBaseline sorts the differences between the fates a baseline
// recorded and the ones seen now into regressions, improvements and notes.
// Counts are not compared (floods vary); fates, reasons, hooks and
// locations are. For a known gap, whose current answer is wrong by
// definition, no difference is a regression.
func compareBaseline(res *Result, name string, now, then []Group, kernel string, gap bool) {
	if kernel == "" {
		kernel = "the baseline"
	}
	regression := func(msg string) {
		if gap {
			res.Changes = append(res.Changes, msg+" (a known gap)")
			return
		}
		res.Regressions = append(res.Regressions, msg)
	}
	has := func(gs []Group, g Group, baseline bool) bool {
		return slices.ContainsFunc(gs, func(h Group) bool {
			if baseline {
				return g.same(h)
			}
			return h.same(g)
		})
	}
	var added []Group
	for _, g := range now {
		if !has(then, g, true) {
			added = append(added, g)
		}
	}
	used := map[int]bool{}
	for _, b := range then {
		if has(now, b, false) {
			continue
		}
		// The closest new group: same fate, then same function or hook.
		best, score := -1, -1
		for i, a := range added {
			if used[i] || a.Fate != b.Fate || b.Netns != "" && a.Netns != b.Netns {
				continue
			}
			sc := 0
			if a.Function == b.Function {
				sc += 2
			}
			if a.Hook == b.Hook {
				sc++
			}
			if a.Reason == b.Reason {
				sc += 4
			}
			if sc > score {
				best, score = i, sc
			}
		}
		if best < 0 {
			msg := fmt.Sprintf("%s: %s (seen on %s) no longer happens", name, b, kernel)
			if b.Fate == "consume" {
				// Consumes of delivered packets are under-reported on some
				// kernels (skb_attempt_defer_free): not a regression.
				res.Changes = append(res.Changes, msg)
			} else {
				regression(msg)
			}
			continue
		}
		used[best] = true
		a := added[best]
		switch {
		case a.Reason != b.Reason && !namedReason(b.Reason) && namedReason(a.Reason) && a.Hook == b.Hook:
			res.Improvements = append(res.Improvements, fmt.Sprintf("%s: drop reason %s on %s is now %s (%s)", name, orDash(b.Reason), kernel, a.Reason, a))
		case a.Reason == b.Reason && b.Hook == "" && a.Hook != "":
			res.Improvements = append(res.Improvements, fmt.Sprintf("%s: the hook, unknown on %s, is now %s (%s)", name, kernel, a.Hook, a))
		case a.Reason != b.Reason || a.Hook != b.Hook || a.Family != b.Family && b.Family != "":
			regression(fmt.Sprintf("%s: was %s on %s, now %s", name, b, kernel, a))
		default: // only the function differs
			res.Changes = append(res.Changes, fmt.Sprintf("%s: location moved from %s on %s to %s", name, orDash(b.Function), kernel, orDash(a.Function)))
		}
	}
	for i, a := range added {
		if !used[i] {
			res.Changes = append(res.Changes, fmt.Sprintf("%s: new fate %s, not seen on %s", name, a, kernel))
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Retry decides a scenario's result from its first run and, when that did
// not pass, the run again: passing the second time makes it a flake, not a
// pass; failing twice keeps the second failure.
func Retry(first, second *Result) *Result {
	if first.Status.Passed() || second == nil {
		return first
	}
	if !second.Status.Passed() {
		r := *second
		r.Seconds += first.Seconds
		r.Notes = append(slices.Clone(r.Notes), "failed again when run a second time: not a flake")
		return &r
	}
	r := *second
	r.Status = StatusFlake
	r.FirstAttempt = append(append([]string(nil), first.Regressions...), first.Notes...)
	if first.Error != "" {
		r.FirstAttempt = append([]string{"error: " + first.Error}, r.FirstAttempt...)
	}
	r.Seconds += first.Seconds
	return &r
}
