package fate

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The streams in testdata/streams were recorded (pktfate trace --record)
// by TestTraceConfirmedByAllObservers on each kernel of the matrix: all
// four observers running, nftables dropping UDP to port 47124 in LOCAL_IN
// (4 IPv4 and 3 IPv6 packets), and 2 packets to the closed port 47126.
// The answers are known from the scenario, whatever the kernel:
const (
	streamNFPort      = 47124
	streamClosedPort  = 47126
	streamNFDrops     = 7
	streamClosedDrops = 2
)

func loadStream(t *testing.T, path string) *Recording {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec, err := ReadRecording(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rec
}

func replay(rec *Recording, cfg CorrelatorConfig) ([]result, CorrelatorStats) {
	c, out := collect(cfg)
	rec.Replay(c)
	return *out, c.Stats()
}

// events returns the event steps of rec (deep copies) and a recording of
// just them followed by a flush.
func events(rec *Recording) []*Event {
	var evs []*Event
	for _, s := range rec.Steps {
		if s.Op == StepEvent {
			evs = append(evs, s.Event.Clone())
		}
	}
	return evs
}

func recordingOf(rec *Recording, evs []*Event) *Recording {
	out := &Recording{Running: rec.Running, Window: rec.Window}
	for _, e := range evs {
		out.Steps = append(out.Steps, Step{Op: StepEvent, Event: e})
	}
	out.Steps = append(out.Steps, Step{Op: StepFlush})
	return out
}

// checkAgreement asserts the scenario's known answer: every netfilter drop
// confirmed by all four observers in LOCAL_IN, every closed-port drop
// confirmed by ebpf and NET_DM with nf and kmod blind, nothing else.
// except changes the expected status of one observer on the netfilter
// drops.
func checkAgreement(t *testing.T, name string, got []result, except map[string]ObserverStatus) {
	t.Helper()
	var nf, closed int
	for _, r := range got {
		want := map[string]ObserverStatus{ObserverEBPF: StatusSaw, ObserverDropmon: StatusSaw}
		switch r.dport {
		case streamNFPort:
			nf++
			want[ObserverNF], want[ObserverKmod] = StatusSaw, StatusSaw
			for o, s := range except {
				want[o] = s
			}
			if r.reason != "NETFILTER_DROP" || r.hook != "LOCAL_IN" {
				t.Errorf("%s: netfilter drop %+v", name, r)
			}
		case streamClosedPort:
			closed++
			want[ObserverNF], want[ObserverKmod] = StatusBlind, StatusBlind
			if r.reason != "NO_SOCKET" {
				t.Errorf("%s: closed-port drop %+v", name, r)
			}
		default:
			t.Errorf("%s: unexpected record %+v", name, r)
			continue
		}
		if r.verdict != VerdictConfirmed || r.late || len(r.conflicts) > 0 {
			t.Errorf("%s: record %+v, want confirmed", name, r)
		}
		for o, s := range want {
			if r.observers[o] != s {
				t.Errorf("%s: port %d: %s is %s, want %s", name, r.dport, o, r.observers[o], s)
			}
		}
	}
	if nf != streamNFDrops || closed != streamClosedDrops {
		t.Errorf("%s: %d netfilter and %d closed-port records, want %d and %d", name, nf, closed, streamNFDrops, streamClosedDrops)
	}
}

func streams(t *testing.T) []string {
	paths, _ := filepath.Glob("../testdata/streams/*.jsonl")
	if len(paths) != 3 {
		t.Fatalf("%d recorded streams, want 6.1, 6.12 and 7.2: %v", len(paths), paths)
	}
	return paths
}

// TestReplayAgreement: the recorded streams replay to the live answer, and
// so do the same events interleaved in any order the sources can deliver
// them (arrival order differs from time order: the module's and NET_DM's
// sockets are read apart from the ring buffer) and with NET_DM's clock
// off by up to the skew allowance. NET_DM's
// clones of the dropped packets (consumed by its kworker) are recognised.
func TestReplayAgreement(t *testing.T) {
	for _, path := range streams(t) {
		line := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		rec := loadStream(t, path)
		if !slices.Equal(rec.Running, Observers) {
			t.Fatalf("%s: recorded with %v running, want all four", line, rec.Running)
		}
		got, st := replay(rec, rec.Config())
		checkAgreement(t, line+" as recorded", got, nil)
		if st.Clones == 0 {
			t.Errorf("%s: no NET_DM clone recognised", line)
		}

		// The ring buffer keeps the eBPF events in the order they were
		// reserved (a drop before NET_DM's clone of it); the module's and
		// NET_DM's queues are per CPU and read apart: any order.
		evs := events(rec)
		var ebpf, others []*Event
		for _, e := range evs {
			if e.Source == ObserverEBPF {
				ebpf = append(ebpf, e)
			} else {
				others = append(others, e)
			}
		}
		rng := rand.New(rand.NewPCG(1, uint64(len(evs))))
		for i := range 20 {
			rng.Shuffle(len(others), func(a, b int) { others[a], others[b] = others[b], others[a] })
			var merged []*Event
			a, b := ebpf, others
			for len(a)+len(b) > 0 {
				if len(b) == 0 || (len(a) > 0 && rng.IntN(2) == 0) {
					merged, a = append(merged, a[0]), a[1:]
				} else {
					merged, b = append(merged, b[0]), b[1:]
				}
			}
			got, _ = replay(recordingOf(rec, merged), rec.Config())
			checkAgreement(t, fmt.Sprintf("%s interleaving %d", line, i), got, nil)
		}
		got, _ = replay(recordingOf(rec, append(slices.Clone(others), ebpf...)), rec.Config())
		checkAgreement(t, line+" eBPF last", got, nil)
		got, _ = replay(recordingOf(rec, append(slices.Clone(ebpf), others...)), rec.Config())
		checkAgreement(t, line+" eBPF first", got, nil)

		for _, skew := range []time.Duration{-15 * time.Millisecond, 15 * time.Millisecond} {
			skewed := events(rec)
			for _, e := range skewed {
				if e.Source == ObserverDropmon {
					e.Mono = uint64(int64(e.Mono) + int64(skew))
				}
			}
			got, _ = replay(recordingOf(rec, skewed), rec.Config())
			checkAgreement(t, line+" NET_DM skewed "+skew.String(), got, nil)
		}
	}
}

// TestReplayDisagreement: the recorded streams, bent into each kind of
// disagreement, get the verdict that names it.
func TestReplayDisagreement(t *testing.T) {
	for _, path := range streams(t) {
		line := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		rec := loadStream(t, path)

		// The module's events vanish without a loss counted: it missed
		// them (the others still confirm).
		var noKmod []*Event
		var first, last uint64
		for _, e := range events(rec) {
			if e.Source == ObserverKmod {
				if first == 0 || e.Mono < first {
					first = e.Mono
				}
				last = max(last, e.Mono)
				continue
			}
			noKmod = append(noKmod, e)
		}
		got, _ := replay(recordingOf(rec, noKmod), rec.Config())
		checkAgreement(t, line+" kmod silent", got, map[string]ObserverStatus{ObserverKmod: StatusMissed})

		// The same with a loss interval over them: lost, not missed.
		lossy := recordingOf(rec, noKmod)
		lossy.Steps = slices.Insert(lossy.Steps, 0, Step{Op: StepLoss, Observer: ObserverKmod, From: first - 1, To: last + 1})
		got, _ = replay(lossy, rec.Config())
		checkAgreement(t, line+" kmod lost", got, map[string]ObserverStatus{ObserverKmod: StatusLost})

		// The module names another reason: a conflict, said in the record.
		conflicting := events(rec)
		for _, e := range conflicting {
			if e.Source == ObserverKmod {
				e.Reason = "NO_SOCKET"
			}
		}
		got, _ = replay(recordingOf(rec, conflicting), rec.Config())
		conflicts := 0
		for _, r := range got {
			if r.dport == streamNFPort && r.verdict == VerdictConflict && len(r.conflicts) > 0 {
				conflicts++
			}
		}
		if conflicts != streamNFDrops {
			t.Errorf("%s: %d conflicts, want %d: %+v", line, conflicts, streamNFDrops, got)
		}

		// Only NET_DM's events, with everyone running: nobody else saw
		// what the eBPF tracepoints must have seen: unconfirmed.
		var onlyDM []*Event
		for _, e := range events(rec) {
			if e.Source == ObserverDropmon {
				onlyDM = append(onlyDM, e)
			}
		}
		got, _ = replay(recordingOf(rec, onlyDM), rec.Config())
		if len(got) != streamNFDrops+streamClosedDrops {
			t.Errorf("%s: %d records from NET_DM alone, want %d", line, len(got), streamNFDrops+streamClosedDrops)
		}
		for _, r := range got {
			if r.verdict != VerdictUnconfirmed || r.observers[ObserverEBPF] != StatusMissed {
				t.Errorf("%s: NET_DM alone: %+v, want unconfirmed with ebpf missed", line, r)
			}
		}

		// NET_DM's clock 60 ms off, beyond the skew allowance: its
		// sightings no longer join; each side stands apart.
		skewed := events(rec)
		for _, e := range skewed {
			if e.Source == ObserverDropmon {
				e.Mono += uint64(60 * time.Millisecond)
			}
		}
		got, _ = replay(recordingOf(rec, skewed), rec.Config())
		apart := 0
		for _, r := range got {
			if r.observers[ObserverDropmon] == StatusSaw && r.observers[ObserverEBPF] == StatusMissed {
				apart++
			}
		}
		if apart != streamNFDrops+streamClosedDrops {
			t.Errorf("%s: %d NET_DM-only records with a 60 ms skew, want %d", line, apart, streamNFDrops+streamClosedDrops)
		}
	}
}

// TestReplayWindowExpiry: when NET_DM's alerts arrive after the window of
// the eBPF sightings closed, the records go out without them (dropmon
// missed), and the alerts are reported late, not lost.
func TestReplayWindowExpiry(t *testing.T) {
	for _, path := range streams(t) {
		line := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		rec := loadStream(t, path)
		var others, dm []*Event
		var last uint64
		for _, e := range events(rec) {
			if e.Source == ObserverDropmon {
				dm = append(dm, e)
			} else {
				others = append(others, e)
				last = max(last, e.Mono)
			}
		}
		cfg := rec.Config()
		cfg.Window = 50 * time.Millisecond
		r := recordingOf(rec, others)
		r.Steps = r.Steps[:len(r.Steps)-1] // no flush yet
		r.Steps = append(r.Steps, Step{Op: StepAdvance, Now: last + uint64(cfg.Window) + 1})
		for _, e := range dm {
			r.Steps = append(r.Steps, Step{Op: StepEvent, Event: e})
		}
		r.Steps = append(r.Steps, Step{Op: StepFlush})
		got, st := replay(r, cfg)
		var late, missed int
		for _, x := range got {
			switch {
			case x.late:
				late++
				if x.observers[ObserverDropmon] != StatusSaw {
					t.Errorf("%s: late record %+v", line, x)
				}
			case x.observers[ObserverDropmon] == StatusMissed:
				missed++
			}
		}
		if st.Late != uint64(len(dm)) || late != len(dm) || missed != streamNFDrops+streamClosedDrops {
			t.Errorf("%s: %d late (stats %d) of %d NET_DM alerts, %d records with dropmon missed, want %d",
				line, late, st.Late, len(dm), missed, streamNFDrops+streamClosedDrops)
		}
	}
}
