package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Overflow is the value the open labels (location, netns, interface) take
// in a series that counts what did not fit under the limit of label sets.
const Overflow = "_overflow"

// maxLabels is the most labels a bounded metric has (the drops').
const maxLabels = 6

// labelValues are a series' label values in the order of its metric's
// label names; unused places are empty. Comparable: it is the map key.
type labelValues [maxLabels]string

// family is one counter whose label sets are bounded: at most limit
// series keep their own label values; past that, a new label set has its
// open labels replaced by Overflow (a folded series, one per combination
// of the closed labels, which the kernel bounds: reasons, hooks,
// families), and every increment that lands there is counted in folded.
// Series of a network namespace that is gone (or has since been named
// otherwise) are removed once idle for the linger time, which frees their
// place. Not safe for concurrent use: Metrics locks.
type family struct {
	name   string
	desc   *prometheus.Desc
	labels []string
	// open are the indexes of the labels folded into Overflow; netns is
	// the index of the netns label (-1: none).
	open   []int
	netns  int
	limit  int
	series map[labelValues]*series
	kept   int    // series with their own label values (the limit's count)
	folded uint64 // increments counted in a folded series
	// removed counts the series taken out because their namespace went.
	removed uint64
}

type series struct {
	values labelValues // sanitised for the exposition
	n      uint64
	// netns is the inode the netns label names (0: none or unknown).
	netns uint32
	// last is when the series was last incremented (the Metrics clock).
	last   time.Time
	folded bool
}

func newFamily(name, help string, labels []string, open []string, limit int) *family {
	f := &family{name: name, labels: labels, netns: -1, limit: limit, series: map[labelValues]*series{},
		desc: prometheus.NewDesc(name, help, labels, nil)}
	for i, l := range labels {
		for _, o := range open {
			if l == o {
				f.open = append(f.open, i)
			}
		}
		if l == "netns" {
			f.netns = i
		}
	}
	return f
}

// inc counts one packet with these label values; ino is the inode of the
// namespace its netns label names (0 when none).
func (f *family) inc(v labelValues, ino uint32, now time.Time) {
	if s := f.series[v]; s != nil {
		s.n++
		s.last = now
		return
	}
	if f.kept < f.limit {
		f.kept++
		f.series[v] = &series{values: sanitize(v), n: 1, netns: ino, last: now}
		return
	}
	for _, i := range f.open {
		v[i] = Overflow
	}
	f.folded++
	if s := f.series[v]; s != nil {
		s.n++
		s.last = now
		return
	}
	f.series[v] = &series{values: sanitize(v), n: 1, last: now, folded: true}
}

// sweep removes the series whose namespace is gone or now has another
// label, once they have been idle for linger: a namespace that comes and
// goes leaves no series behind, and its place under the limit is free
// again. current returns a namespace's label and whether it still
// exists.
func (f *family) sweep(now time.Time, linger time.Duration, current func(uint32) (string, bool)) {
	if f.netns < 0 {
		return
	}
	for k, s := range f.series {
		if s.folded || s.netns == 0 || now.Sub(s.last) < linger {
			continue
		}
		if label, alive := current(s.netns); alive && label == k[f.netns] {
			continue
		}
		delete(f.series, k)
		f.kept--
		f.removed++
	}
}

func (f *family) collect(ch chan<- prometheus.Metric) {
	n := len(f.labels)
	for _, s := range f.series {
		m, err := prometheus.NewConstMetric(f.desc, prometheus.CounterValue, float64(s.n), s.values[:n]...)
		if err == nil {
			ch <- m
		}
	}
}

// sanitize makes every value valid UTF-8 (an interface name or a comm
// is bytes from the kernel), which the exposition requires.
func sanitize(v labelValues) labelValues {
	for i := range v {
		v[i] = strings.ToValidUTF8(v[i], "\uFFFD")
	}
	return v
}
