package fate

import (
	"cmp"
	"slices"
	"time"
)

// Summary aggregates the events of one capture.
type Summary struct {
	Start, End time.Time
	Events     uint64
	Drops      uint64
	Consumed   uint64
	ByReason   map[string]uint64
	ByLocation map[string]uint64
	// ByHook counts drops inside netfilter by "family hook" ("ipv4 LOCAL_IN").
	ByHook map[string]uint64
	// Lost holds every loss counter of every source, zero or not.
	Lost []Loss
	// Unknowns says what else the capture cannot vouch for (a source that
	// did not finish delivering, a summary that was never written): any
	// entry makes Completeness unknown.
	Unknowns []string
	// Notes are the sources' notices (fate.Noticer), each once.
	Notes []string
	// Sources says which sources ran and why others did not.
	Sources []SourceStatus
	// Ignored counts events not shown because they are not packets' fates:
	// "drop_monitor_clones" (NET_DM's copies of dropped packets, which it
	// frees with consume_skb), "copies_released" (fate.Event.CopyReleased),
	// and the sources' information (fate.Informer: "ebpf_not_packets",
	// "nf_stolen"...).
	Ignored map[string]uint64
	// Fates counts fate records; with several observers, the drop and
	// consume counts above count records (packets), not sightings.
	Fates uint64
	// Correlation is set when several observers were joined.
	Correlation *Correlation
}

// Correlation summarises how the observers agreed.
type Correlation struct {
	Observers []string
	ByVerdict map[string]uint64
	Pairs     []PairAgreement
	// Late counts sightings that came after their record was reported.
	Late uint64
	// Forced counts records reported early because the window was full.
	Forced uint64
	// LostBy estimates, per observer, the packets it lost: records the
	// others saw in one of its loss intervals.
	LostBy map[string]uint64
}

// PairAgreement counts the packets two observers both saw, and how many of
// those they disagreed about.
type PairAgreement struct {
	A, B      string
	BothSaw   uint64
	Conflicts uint64
}

// Completeness says whether a capture proves every packet's fate.
type Completeness uint8

const (
	// Complete: every loss counter was read and is zero.
	Complete Completeness = iota
	// Incomplete: some observer lost events.
	Incomplete
	// CompletenessUnknown: a counter could not be read, or something else
	// (Summary.Unknowns) leaves open whether events were lost; nothing
	// counted was lost.
	CompletenessUnknown
)

func (c Completeness) String() string {
	switch c {
	case Complete:
		return "complete"
	case Incomplete:
		return "incomplete"
	}
	return "unknown"
}

// Completeness reports whether no observer lost anything: only then does
// the capture prove what happened to every packet. A counted loss makes
// it Incomplete even when other counters are unknown.
func (s *Summary) Completeness() Completeness {
	if s.TotalLost() > 0 {
		return Incomplete
	}
	if len(s.Unknowns) > 0 {
		return CompletenessUnknown
	}
	for _, l := range s.Lost {
		if l.Unknown != "" {
			return CompletenessUnknown
		}
	}
	return Complete
}

// UnknownReasons lists why completeness is unknown: the Unknowns, then
// each counter that could not be read.
func (s *Summary) UnknownReasons() []string {
	out := append([]string(nil), s.Unknowns...)
	for _, l := range s.Lost {
		if l.Unknown != "" {
			out = append(out, l.Key()+": "+l.Unknown)
		}
	}
	return out
}

// SetCorrelation fills Correlation from a correlator's statistics.
func (s *Summary) SetCorrelation(st CorrelatorStats) {
	obs := st.Observers
	c := &Correlation{Observers: obs, ByVerdict: map[string]uint64{}, Late: st.Late, Forced: st.Forced, LostBy: st.LostBy}
	for v, n := range st.ByVerdict {
		c.ByVerdict[Verdict(v).String()] = n // zeros too: a table, not a tally
	}
	for i := range obs {
		for j := i + 1; j < len(obs); j++ {
			if st.Agreement[i][j] > 0 {
				c.Pairs = append(c.Pairs, PairAgreement{A: obs[i], B: obs[j], BothSaw: st.Agreement[i][j], Conflicts: st.Disagreement[i][j]})
			}
		}
	}
	s.Correlation = c
}

// SourceStatus says whether a source ran.
type SourceStatus struct {
	Name string
	// Running is true when the source was started.
	Running bool
	// Reason explains why a source did not run.
	Reason string
}

// NewSummary returns an empty Summary.
func NewSummary() *Summary {
	return &Summary{ByReason: map[string]uint64{}, ByLocation: map[string]uint64{}, ByHook: map[string]uint64{}, Ignored: map[string]uint64{}}
}

// Add counts one event and its fate.
func (s *Summary) Add(e *Event) {
	s.Events++
	s.AddFate(e)
}

// AddFate counts one packet's fate without counting an event.
func (s *Summary) AddFate(e *Event) {
	s.Fates++
	switch e.Fate {
	case FateDrop:
		s.Drops++
		s.ByReason[e.Reason]++
		s.ByLocation[e.Location]++
		if e.Hook != "" {
			s.ByHook[e.Family+" "+e.Hook]++
		}
	case FateConsume:
		s.Consumed++
	}
}

// TotalLost is the sum of every loss counter that could be read.
func (s *Summary) TotalLost() uint64 {
	var n uint64
	for _, c := range s.Lost {
		if c.Unknown == "" {
			n += c.Value
		}
	}
	return n
}

// Sorted returns a count map as Counters, largest first, then by name.
func Sorted(m map[string]uint64) []Counter {
	out := make([]Counter, 0, len(m))
	for k, v := range m {
		out = append(out, Counter{Name: k, Value: v})
	}
	slices.SortFunc(out, func(a, b Counter) int {
		if c := cmp.Compare(b.Value, a.Value); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}
