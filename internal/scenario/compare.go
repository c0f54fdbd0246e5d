package scenario

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Observed is one packet's fate as the runner saw it (one fate record, or
// one event when a single observer ran).
type Observed struct {
	Fate     string // drop or consume
	Reason   string
	Hook     string
	Function string
	// Observers that saw the packet.
	Observers []string
	Verdict   string
	Proto     string
	Src, Dst  netip.Addr
	Sport     uint16
	Dport     uint16
	ICMPType  uint8
}

// Matches tells whether the packet is one the match selects.
func (m Match) Matches(o *Observed) bool {
	return (m.Proto == "" || m.Proto == o.Proto) &&
		(!m.Src.IsValid() || m.Src == o.Src) &&
		(!m.Dst.IsValid() || m.Dst == o.Dst) &&
		(m.Sport == 0 || m.Sport == o.Sport) &&
		(m.Dport == 0 || m.Dport == o.Dport) &&
		(m.ICMPType == nil || (o.Proto == "icmp" || o.Proto == "icmp6") && *m.ICMPType == o.ICMPType)
}

// Env is what the checks need to know of the run.
type Env struct {
	// Running names the observers that ran; a hook or confirmation by an
	// observer that did not run cannot be checked (it is noted instead).
	Running []string
	// Kernel is the release the scenario ran on (for expectations limited
	// to some kernels; "" applies all of them).
	Kernel string
}

// Satisfies tells whether a packet meets the expected fate, and if not why.
func (x Expectation) satisfies(o *Observed, env Env) bool {
	if o.Fate != x.Fate {
		return false
	}
	if len(x.Reasons) > 0 && !slices.Contains(x.Reasons, o.Reason) {
		return false
	}
	if len(x.Functions) > 0 && !slices.Contains(x.Functions, o.Function) {
		return false
	}
	if slices.Contains(env.Running, "nf") {
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
	}
	for _, c := range x.ConfirmedBy {
		if slices.Contains(env.Running, c) && !slices.Contains(o.Observers, c) {
			return false
		}
	}
	return true
}

// Group is a set of packets that met the same fate.
type Group struct {
	Fate      string   `json:"fate"`
	Reason    string   `json:"reason,omitempty"`
	Hook      string   `json:"hook,omitempty"`
	Function  string   `json:"location,omitempty"`
	Observers []string `json:"observers,omitempty"`
	Count     int      `json:"count"`
}

func (g Group) key() string {
	return g.Fate + "/" + g.Reason + "/" + g.Hook + "/" + g.Function
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
	}
	return s
}

// Summarise groups packets by fate, reason, hook and function, most
// frequent first.
func Summarise(obs []*Observed) []Group {
	idx := map[string]int{}
	var out []Group
	for _, o := range obs {
		g := Group{Fate: o.Fate, Reason: o.Reason, Hook: o.Hook, Function: o.Function}
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
	}
	for i := range out {
		sort.Strings(out[i].Observers)
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
)

// Result is the outcome of one scenario.
type Result struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Status Status `json:"status"`
	// Regressions say what did not happen as expected (or as in the baseline).
	Regressions []string `json:"regressions,omitempty"`
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

// Check compares what was observed with a scenario's expectations and,
// when base is not nil, with a baseline recorded earlier (maybe on another
// kernel). It is pure: the runner calls it, tests feed it fixtures.
func Check(s *Scenario, obs []*Observed, env Env, base *BaselineScenario, baseKernel string) *Result {
	res := &Result{Name: s.Name, File: s.File, Status: StatusPass, Observed: map[string][]Group{}}
	for _, x := range s.Expect {
		if env.Kernel != "" && !x.Kernel.Contains(env.Kernel) {
			continue
		}
		var selected []*Observed
		n := 0
		for _, o := range obs {
			if !x.Match.Matches(o) {
				continue
			}
			selected = append(selected, o)
			if x.satisfies(o, env) {
				n++
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
		if !ok {
			res.Regressions = append(res.Regressions, fmt.Sprintf("%s: for %s expected %s; %d did, %s",
				x.Name, x.Match, x.Want(), n, describe(groups)))
		}
		if x.Hook != "" && !slices.Contains(env.Running, "nf") {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: hook not checked: the netfilter attribution (nf) is not running", x.Name))
		}
		for _, c := range x.ConfirmedBy {
			if !slices.Contains(env.Running, c) {
				res.Notes = append(res.Notes, fmt.Sprintf("%s: confirmation by %s not checked: it is not running", x.Name, c))
			}
		}
		if base != nil {
			compareBaseline(res, x.Name, groups, base.Observed[x.Name], baseKernel)
		}
	}
	if len(res.Regressions) > 0 {
		res.Status = StatusFail
	}
	return res
}

func namedReason(r string) bool { return r != "" && r != "NOT_SPECIFIED" }

// compareBaseline sorts the differences between the fates a baseline
// recorded and the ones seen now into regressions, improvements and notes.
// Counts are not compared (floods vary); fates, reasons, hooks and
// locations are.
func compareBaseline(res *Result, name string, now, then []Group, kernel string) {
	if kernel == "" {
		kernel = "the baseline"
	}
	has := func(gs []Group, g Group) bool {
		return slices.ContainsFunc(gs, func(h Group) bool { return h.key() == g.key() })
	}
	var added []Group
	for _, g := range now {
		if !has(then, g) {
			added = append(added, g)
		}
	}
	used := map[int]bool{}
	for _, b := range then {
		if has(now, b) {
			continue
		}
		// The closest new group: same fate, then same function or hook.
		best, score := -1, -1
		for i, a := range added {
			if used[i] || a.Fate != b.Fate {
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
				res.Regressions = append(res.Regressions, msg)
			}
			continue
		}
		used[best] = true
		a := added[best]
		switch {
		case a.Reason != b.Reason && !namedReason(b.Reason) && namedReason(a.Reason) && a.Hook == b.Hook:
			res.Improvements = append(res.Improvements, fmt.Sprintf("%s: drop reason %s on %s is now %s (%s)", name, orDash(b.Reason), kernel, a.Reason, a))
		case a.Reason != b.Reason || a.Hook != b.Hook:
			res.Regressions = append(res.Regressions, fmt.Sprintf("%s: was %s on %s, now %s", name, b, kernel, a))
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
	if first.Status == StatusPass || second == nil {
		return first
	}
	if second.Status != StatusPass {
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
