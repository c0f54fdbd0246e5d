package tracer

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
	Lost []Counter
	// Sources says which sources ran and why others did not.
	Sources []SourceStatus
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
	return &Summary{ByReason: map[string]uint64{}, ByLocation: map[string]uint64{}, ByHook: map[string]uint64{}}
}

// Add counts one event.
func (s *Summary) Add(e *Event) {
	s.Events++
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

// TotalLost is the sum of every loss counter.
func (s *Summary) TotalLost() uint64 {
	var n uint64
	for _, c := range s.Lost {
		n += c.Value
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
