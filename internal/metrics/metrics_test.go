package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pktfate/pktfate/fate"
)

// sample is one gathered sample: its metric name and labels.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// gather registers m alone and returns every sample.
func gather(t *testing.T, m *Metrics) []sample {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	var out []sample
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			s := sample{name: mf.GetName(), labels: map[string]string{}}
			for _, lp := range mt.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case mt.Counter != nil:
				s.value = mt.Counter.GetValue()
			case mt.Gauge != nil:
				s.value = mt.Gauge.GetValue()
			}
			out = append(out, s)
		}
	}
	return out
}

// sum adds the samples of name whose labels include match.
func sum(ss []sample, name string, match map[string]string) (float64, int) {
	var v float64
	n := 0
next:
	for _, s := range ss {
		if s.name != name {
			continue
		}
		for k, want := range match {
			if s.labels[k] != want {
				continue next
			}
		}
		v += s.value
		n++
	}
	return v, n
}

// fakeNetns makes a /run/netns and a /proc of files: each name under
// runNetns is a file whose inode stands for a namespace's.
type fakeNetns struct {
	t         *testing.T
	run, proc string
}

func newFakeNetns(t *testing.T) *fakeNetns {
	d := t.TempDir()
	f := &fakeNetns{t: t, run: filepath.Join(d, "netns"), proc: filepath.Join(d, "proc")}
	for _, p := range []string{f.run, f.proc} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeNetns) namer() *Namer { return &Namer{RunNetns: f.run, Proc: f.proc} }

// named adds a name under /run/netns and returns its inode.
func (f *fakeNetns) named(name string) uint32 {
	p := filepath.Join(f.run, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return inode(f.t, p)
}

// process adds /proc/PID with comm, its ns/net link naming ino.
func (f *fakeNetns) process(pid int, comm string, ino uint32) {
	d := filepath.Join(f.proc, fmt.Sprint(pid))
	if err := os.MkdirAll(filepath.Join(d, "ns"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(fmt.Sprintf("net:[%d]", ino), filepath.Join(d, "ns", "net")); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "comm"), []byte(comm+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint32 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

func drop(reason, loc string, netns uint32, ifname string) *fate.Event {
	return &fate.Event{Source: "ebpf", Fate: fate.FateDrop, Reason: reason, Location: loc, Netns: netns, Ifname: ifname}
}

// TestCountsEventsOrRecords: with one observer each event is a packet;
// with several each fate record is, and the events are not counted again;
// the location loses its offset; verdicts and each observer's part are
// counted.
func TestCountsEventsOrRecords(t *testing.T) {
	fn := newFakeNetns(t)
	ino := fn.named("blue")
	m := New(Config{Version: "test", Kernel: "6.18", Namer: fn.namer()})
	m.SetSources([]string{"ebpf"}, []fate.SourceStatus{{Name: "dropmon", Reason: "NET_DM family absent"}})
	ss := gather(t, m)
	if v, n := sum(ss, NameUp, map[string]string{"observer": "ebpf"}); n != 1 || v != 0 {
		t.Errorf("ebpf up before attached: %v (%d samples), want 0", v, n)
	}
	m.Attached()
	for range 3 {
		m.Event(drop("NO_SOCKET", "__udp4_lib_rcv+0x4bc", ino, "lo"))
	}
	m.Event(drop("NETFILTER_DROP", "nft_do_chain+0x3e8", ino, "lo"))
	m.Event(&fate.Event{Source: "ebpf", Fate: fate.FateConsume, Location: "icmp_rcv+0x259", Netns: ino, Ifname: "lo"})
	ss = gather(t, m)
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{NameDropped, map[string]string{"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "netns": "blue", "interface": "lo"}, 3},
		{NameDropped, map[string]string{"reason": "NETFILTER_DROP", "location": "nft_do_chain"}, 1},
		{NameDropped, nil, 4},
		{NameConsumed, map[string]string{"location": "icmp_rcv", "netns": "blue"}, 1},
		{NameObserver, map[string]string{"observer": "ebpf", "status": "saw"}, 5},
		{NameUp, map[string]string{"observer": "ebpf"}, 1},
		{NameUp, map[string]string{"observer": "dropmon"}, 0},
		{NameBuildInfo, map[string]string{"version": "test", "kernel": "6.18"}, 1},
	} {
		if got, n := sum(ss, c.name, c.match); got != c.want || n == 0 {
			t.Errorf("%s%v = %v (%d samples), want %v", c.name, c.match, got, n, c.want)
		}
	}
	if _, n := sum(ss, NameVerdicts, nil); n != 0 {
		t.Errorf("verdicts exported with one observer")
	}

	m = New(Config{Namer: fn.namer()})
	m.SetSources([]string{"ebpf", "nf"}, nil)
	m.Attached()
	ev := drop("NETFILTER_DROP", "nft_do_chain+0x3e8", ino, "lo")
	ev.Hook, ev.Family = "LOCAL_IN", "ipv4"
	m.Event(ev) // an event of a correlated capture is not a packet
	m.Fate(&fate.FateRecord{Event: ev, Verdict: fate.VerdictConfirmed, Observers: []fate.ObserverReport{
		{Name: "ebpf", Status: fate.StatusSaw}, {Name: "nf", Status: fate.StatusSaw}, {Name: "dropmon", Status: fate.StatusNotRunning}}})
	m.Fate(&fate.FateRecord{Event: drop("NO_SOCKET", "udp_rcv+0x1", ino, "lo"), Verdict: fate.VerdictSingle, Observers: []fate.ObserverReport{
		{Name: "ebpf", Status: fate.StatusSaw}, {Name: "nf", Status: fate.StatusBlind}}})
	ss = gather(t, m)
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{NameDropped, nil, 2},
		{NameDropped, map[string]string{"reason": "NETFILTER_DROP", "hook": "LOCAL_IN", "family": "ipv4"}, 1},
		{NameVerdicts, map[string]string{"verdict": "confirmed"}, 1},
		{NameVerdicts, map[string]string{"verdict": "single"}, 1},
		{NameVerdicts, map[string]string{"verdict": "conflict"}, 0},
		{NameVerdicts, map[string]string{"verdict": "unconfirmed"}, 0},
		{NameObserver, map[string]string{"observer": "ebpf", "status": "saw"}, 2},
		{NameObserver, map[string]string{"observer": "nf", "status": "saw"}, 1},
		{NameObserver, map[string]string{"observer": "nf", "status": "blind"}, 1},
	} {
		if got, n := sum(ss, c.name, c.match); got != c.want || n == 0 {
			t.Errorf("correlated: %s%v = %v (%d samples), want %v", c.name, c.match, got, n, c.want)
		}
	}
	if _, n := sum(ss, NameObserver, map[string]string{"observer": "dropmon"}); n != 0 {
		t.Error("an observer that does not run is counted")
	}
}

// TestLedger: every loss counter is exported with its value; one that
// cannot be read has no sample (never 0) and its unreadable gauge is 1;
// an observer is complete only when all its counters were read and are
// zero; nothing is claimed before the first read.
func TestLedger(t *testing.T) {
	m := New(Config{Namer: newFakeNetns(t).namer()})
	m.SetSources([]string{"ebpf", "nf", "dropmon"}, nil)
	m.Attached()
	if _, n := sum(gather(t, m), NameComplete, nil); n != 0 {
		t.Error("completeness claimed before any counter was read")
	}
	m.Tick([]fate.Loss{
		{Observer: "ebpf", Name: "ringbuf_full", Value: 0},
		{Observer: "ebpf", Name: "decode_errors", Value: 0},
		{Observer: "nf", Name: "inflight_full", Value: 3},
		{Observer: "dropmon", Name: "queue_full", Unknown: "STATS_GET: operation not permitted"},
		{Observer: "dropmon", Name: "socket_overrun", Value: 0},
	}, &fate.CorrelatorStats{Forced: 2, Late: 5})
	ss := gather(t, m)
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{NameLost, map[string]string{"observer": "ebpf", "name": "ringbuf_full"}, 0},
		{NameLost, map[string]string{"observer": "nf", "name": "inflight_full"}, 3},
		{NameLost, map[string]string{"observer": "dropmon", "name": "socket_overrun"}, 0},
		{NameLost, map[string]string{"observer": "correlator", "name": "reported_early"}, 2},
		{NameUnreadable, map[string]string{"observer": "dropmon", "name": "queue_full"}, 1},
		{NameUnreadable, map[string]string{"observer": "ebpf", "name": "ringbuf_full"}, 0},
		{NameComplete, map[string]string{"observer": "ebpf"}, 1},
		{NameComplete, map[string]string{"observer": "nf"}, 0},
		{NameComplete, map[string]string{"observer": "dropmon"}, 0},
		{NameComplete, map[string]string{"observer": "correlator"}, 0},
		{NameLate, nil, 5},
	} {
		if got, n := sum(ss, c.name, c.match); got != c.want || n != 1 {
			t.Errorf("%s%v = %v (%d samples), want %v in one sample", c.name, c.match, got, n, c.want)
		}
	}
	if _, n := sum(ss, NameLost, map[string]string{"observer": "dropmon", "name": "queue_full"}); n != 0 {
		t.Error("an unreadable counter is exported as a value")
	}
}

// TestCardinalityBounded: traffic over more namespaces than the limit
// keeps the limit's worth of series with their own labels, folds the rest
// into _overflow (keeping the reason), counts each folded packet, and
// loses no packet from the totals.
func TestCardinalityBounded(t *testing.T) {
	fn := newFakeNetns(t)
	const limit, spaces, perNS = 8, 30, 3
	var inos []uint32
	for i := range spaces {
		inos = append(inos, fn.named(fmt.Sprintf("ns%02d", i)))
	}
	m := New(Config{MaxSeries: limit, Namer: fn.namer()})
	m.SetSources([]string{"ebpf"}, nil)
	m.Attached()
	for _, ino := range inos {
		for range perNS {
			m.Event(drop("NO_SOCKET", "udp_rcv+0x1", ino, "lo"))
		}
		m.Event(drop("NETFILTER_DROP", "nft_do_chain+0x1", ino, "lo"))
	}
	ss := gather(t, m)
	total, nseries := sum(ss, NameDropped, nil)
	if total != spaces*(perNS+1) {
		t.Errorf("total drops %v, want %d: folding must not lose packets", total, spaces*(perNS+1))
	}
	overflow, nfolded := sum(ss, NameDropped, map[string]string{"netns": Overflow, "location": Overflow, "interface": Overflow})
	if nseries-nfolded != limit {
		t.Errorf("%d series with their own labels, want the limit %d", nseries-nfolded, limit)
	}
	if nfolded != 2 {
		t.Errorf("%d folded series, want one per reason (2)", nfolded)
	}
	folded, _ := sum(ss, NameFolded, map[string]string{"metric": NameDropped})
	if kept := total - overflow; folded != overflow || kept != 4*(perNS+1) {
		t.Errorf("folded counter %v, _overflow series hold %v, the kept series %v (want the first 4 namespaces' %d): they must add up",
			folded, overflow, kept, 4*(perNS+1))
	}
	if r, _ := sum(ss, NameDropped, map[string]string{"reason": "NO_SOCKET"}); r != spaces*perNS {
		t.Errorf("NO_SOCKET drops %v, want %d: a fold keeps the reason", r, spaces*perNS)
	}
	if s, _ := sum(ss, NameSeries, map[string]string{"metric": NameDropped}); int(s) != nseries {
		t.Errorf("%s says %v series, %d exported", NameSeries, s, nseries)
	}
	if err := lint(m); err != "" {
		t.Error(err)
	}
}

// TestNamespacesComeAndGo: the series of a namespace that went away are
// removed once idle for the linger time, and their places go to new
// namespaces instead of the overflow.
func TestNamespacesComeAndGo(t *testing.T) {
	fn := newFakeNetns(t)
	clock := time.Unix(1_800_000_000, 0)
	now := func() time.Time { return clock }
	nm := fn.namer()
	nm.Now = now
	m := New(Config{MaxSeries: 4, NetnsLinger: time.Minute, Refresh: time.Second, Namer: nm, Now: now})
	m.SetSources([]string{"ebpf"}, nil)
	m.Attached()
	tick := func(d time.Duration) { clock = clock.Add(d); m.Tick(nil, nil) }
	for round := range 5 {
		var names []string
		for i := range 4 {
			name := fmt.Sprintf("r%dns%d", round, i)
			names = append(names, name)
			m.Event(drop("NO_SOCKET", "udp_rcv+0x1", fn.named(name), "lo"))
		}
		ss := gather(t, m)
		if _, n := sum(ss, NameDropped, map[string]string{"netns": Overflow}); n != 0 {
			t.Fatalf("round %d: folded though the old namespaces are gone", round)
		}
		for _, name := range names {
			if v, _ := sum(ss, NameDropped, map[string]string{"netns": name}); v != 1 {
				t.Errorf("round %d: namespace %s has %v drops, want 1", round, name, v)
			}
			os.Remove(filepath.Join(fn.run, name))
		}
		tick(30 * time.Second) // gone, but not idle long enough
		if _, n := sum(gather(t, m), NameDropped, nil); n != 4 {
			t.Errorf("round %d: %d series 30s after the namespaces went, want them kept 1m", round, n)
		}
		tick(31 * time.Second)
		if _, n := sum(gather(t, m), NameDropped, nil); n != 0 {
			t.Errorf("round %d: %d series left after the linger time", round, n)
		}
	}
	if v, _ := sum(gather(t, m), NameSeriesRemoved, map[string]string{"metric": NameDropped}); v != 20 {
		t.Errorf("removed %v series, want 20", v)
	}
}

// TestNamer: a name under /run/netns first, then COMM[PID] of the lowest
// PID (and the same process while it lives), the inode last; an inode
// not found is looked for again only after a backoff, and Refresh forgets
// namespaces gone.
func TestNamer(t *testing.T) {
	fn := newFakeNetns(t)
	named := fn.named("blue")
	fn.process(40, "sleep", named) // a name beats a process
	const box, lone = 4026532001, 4026532002
	fn.process(300, "nginx", box)
	fn.process(120, "containerd-shim", box)
	clock := time.Unix(1_800_000_000, 0)
	n := fn.namer()
	n.Now = func() time.Time { return clock }
	for _, c := range []struct {
		ino  uint32
		want string
	}{{0, ""}, {named, "blue"}, {box, "containerd-shim[120]"}, {lone, "4026532002"}} {
		if got := n.Label(c.ino); got != c.want {
			t.Errorf("Label(%d) = %q, want %q", c.ino, got, c.want)
		}
	}
	scans := n.Scans()
	for range 100 {
		n.Label(lone)
	}
	if n.Scans() != scans {
		t.Errorf("an inode not found scanned %d more times within its backoff", n.Scans()-scans)
	}
	for _, d := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		clock = clock.Add(d)
		n.Label(lone)
		n.Label(lone)
	}
	if got := n.Scans() - scans; got != 3 {
		t.Errorf("an inode not found scanned %d times in 700ms, want 3 (after 100, 200, 400ms)", got)
	}
	n.Label(4026532003)
	if got := n.Scans() - scans; got != 4 {
		t.Errorf("a new inode did not scan at once (%d scans)", got)
	}
	// The lowest PID now is a newcomer: the label stays with PID 120
	// while it lives, and moves when it is gone.
	fn.process(7, "init", box)
	n.Refresh()
	if got := n.Label(box); got != "containerd-shim[120]" {
		t.Errorf("label moved to %q while its process lives", got)
	}
	os.RemoveAll(filepath.Join(fn.proc, "120"))
	n.Refresh()
	if got := n.Label(box); got != "init[7]" {
		t.Errorf("label %q after PID 120 left, want init[7]", got)
	}
	os.Remove(filepath.Join(fn.run, "blue"))
	n.Refresh()
	if l, found := n.Lookup(named); !found || l != "sleep[40]" {
		t.Errorf("after its name went: %q found %v, want sleep[40] by its process", l, found)
	}
	os.RemoveAll(filepath.Join(fn.proc, "40"))
	n.Refresh()
	if _, found := n.Lookup(named); found {
		t.Error("a namespace with neither name nor process is still found")
	}
}

// TestLint: the exposition passes Prometheus's own linter (promlint, what
// `promtool check metrics` runs), with every kind of series present.
func TestLint(t *testing.T) {
	fn := newFakeNetns(t)
	m := New(Config{Version: "test", Kernel: "6.18", Namer: fn.namer()})
	m.SetSources([]string{"ebpf", "nf"}, []fate.SourceStatus{{Name: "kmod", Reason: "not loaded"}})
	m.Attached()
	m.Fate(&fate.FateRecord{Event: drop("NO_SOCKET", "udp_rcv+0x1", fn.named("x"), "l\xffo"), Verdict: fate.VerdictSingle,
		Observers: []fate.ObserverReport{{Name: "ebpf", Status: fate.StatusSaw}}})
	m.Tick([]fate.Loss{{Observer: "ebpf", Name: "ringbuf_full"}, {Observer: "nf", Name: "inflight_full", Unknown: "x"}}, &fate.CorrelatorStats{})
	if err := lint(m); err != "" {
		t.Error(err)
	}
	if _, n := sum(gather(t, m), NameDropped, map[string]string{"interface": "l\uFFFDo"}); n != 1 {
		t.Error("an interface name that is not UTF-8 is not exported sanitised")
	}
}

func lint(m *Metrics) string {
	probs, err := testutil.CollectAndLint(m)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, p := range probs {
		out = append(out, p.Metric+": "+p.Text)
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
