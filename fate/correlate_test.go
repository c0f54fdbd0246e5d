package fate

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/testutil"
)

const ms = uint64(time.Millisecond)

// udpHeaders returns IPv4+UDP headers from 10.0.0.1:sport to 10.0.0.2:9.
func udpHeaders(sport uint16) []byte {
	d := make([]byte, 28)
	d[0], d[2], d[3], d[8], d[9] = 0x45, 0, 28, 64, 17
	copy(d[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	d[20], d[21], d[23], d[25] = byte(sport>>8), byte(sport), 9, 8
	return d
}

func ebpfDrop(mono, skb uint64, sport uint16, reason, loc string) *Event {
	return &Event{Source: ObserverEBPF, Mono: mono, Skb: skb, Fate: FateDrop, Reason: reason, Location: loc,
		Ifindex: 1, Data: udpHeaders(sport), HadMAC: true, EtherType: 0x0800}
}

// dropmonDrop is the NET_DM view of the same packet: payload from the MAC
// header, no skb address.
func dropmonDrop(mono uint64, sport uint16, reason, loc string) *Event {
	return &Event{Source: ObserverDropmon, Mono: mono, Fate: FateDrop, Reason: reason, Location: loc,
		Ifindex: 1, Data: append(make([]byte, 14), udpHeaders(sport)...), MACHeader: true, EtherType: 0x0800}
}

type result struct {
	dport     uint16
	verdict   Verdict
	observers map[string]ObserverStatus
	reason    string
	hook      string
	late      bool
	conflicts []string
	mono      uint64
}

func collect(cfg CorrelatorConfig) (*Correlator, *[]result) {
	var out []result
	c := NewCorrelator(cfg, func(r *FateRecord) {
		res := result{dport: r.Event.Packet.Dport, verdict: r.Verdict, observers: map[string]ObserverStatus{}, reason: r.Event.Reason,
			hook: r.Event.Hook, late: r.Late, conflicts: slices.Clone(r.Conflicts), mono: r.mono}
		for _, o := range r.Observers {
			res.observers[o.Name] = o.Status
		}
		out = append(out, res)
	})
	return c, &out
}

func running(names ...string) []string { return names }

func TestCorrelateAgreementAndReordering(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "nf", "dropmon")})
	// Packet 1: eBPF first, NET_DM 3 ms later. Packet 2: NET_DM first.
	c.Add(ebpfDrop(100*ms, 0xa, 1000, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Add(dropmonDrop(103*ms, 1000, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Add(dropmonDrop(110*ms, 1001, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Add(ebpfDrop(109*ms, 0xb, 1001, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Flush()
	if len(*out) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(*out), *out)
	}
	for i, r := range *out {
		if r.verdict != VerdictConfirmed || r.observers["ebpf"] != StatusSaw || r.observers["dropmon"] != StatusSaw ||
			r.observers["nf"] != StatusBlind || r.observers["kmod"] != StatusNotRunning {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	if (*out)[0].mono > (*out)[1].mono {
		t.Error("records not emitted in time order")
	}
	if st := c.Stats(); st.ByVerdict[VerdictConfirmed] != 2 || st.Agreement[0][2] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestCorrelateSkbJoinAndNetfilter(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "nf", "kmod", "dropmon")})
	e := ebpfDrop(50*ms, 0xff00, 2000, "NETFILTER_DROP", "nf_hook_slow+0x7d")
	e.Hook, e.Family, e.Verdict = "LOCAL_IN", "ipv4", "drop"
	k := &Event{Source: ObserverKmod, Mono: 50*ms + 2000, Skb: 0xff00, Fate: FateDrop, Reason: "NETFILTER_DROP",
		Hook: "LOCAL_IN", Family: "ipv4", Data: udpHeaders(2000)}
	c.Add(k)
	c.Add(e)
	c.Add(dropmonDrop(51*ms, 2000, "NETFILTER_DROP", "nf_hook_slow+0x7d"))
	c.Flush()
	if len(*out) != 1 {
		t.Fatalf("%d records, want 1: %+v", len(*out), *out)
	}
	r := (*out)[0]
	for _, name := range Observers {
		if r.observers[name] != StatusSaw {
			t.Errorf("%s: %s, want saw (%+v)", name, r.observers[name], r)
		}
	}
	if r.verdict != VerdictConfirmed || r.hook != "LOCAL_IN" {
		t.Errorf("record %+v", r)
	}
}

// TestCorrelateNetfilterCoverage: the module saw a drop inside LOCAL_IN
// that the nf observer did not. Where its links were attached by then that
// is a miss; in a namespace without them, or before they were attached
// there, nf is blind. Either way ebpf and kmod confirm the drop.
func TestCorrelateNetfilterCoverage(t *testing.T) {
	for _, c := range []struct {
		name  string
		since uint64 // links in netns 7 from then; 0: never
		want  ObserverStatus
	}{
		{"attached from the start", 1, StatusMissed},
		{"not attached", 0, StatusBlind},
		{"attached after the drop", 60 * ms, StatusBlind},
		{"attached before the drop", 40 * ms, StatusMissed},
	} {
		corr, out := collect(CorrelatorConfig{Running: running("ebpf", "nf", "kmod"),
			Blind: func(o string, r *FateRecord) string {
				if o == ObserverNF && !(r.Event.Netns == 7 && c.since != 0 && r.Mono() >= c.since) {
					return "netfilter links were not yet attached in this network namespace"
				}
				return KnownBlind(o, r)
			}})
		e := ebpfDrop(50*ms, 0xff00, 2000, "NETFILTER_DROP", "nft_do_chain+0x40f")
		e.Netns = 7
		corr.Add(e)
		corr.Add(&Event{Source: ObserverKmod, Mono: 50*ms + 2000, Skb: 0xff00, Fate: FateDrop, Reason: "NETFILTER_DROP",
			Hook: "LOCAL_IN", Family: "ipv4", Netns: 7, Data: udpHeaders(2000)})
		corr.Flush()
		if len(*out) != 1 || (*out)[0].observers["nf"] != c.want || (*out)[0].verdict != VerdictConfirmed {
			t.Errorf("%s: %+v, want nf %s", c.name, *out, c.want)
		}
	}
}

func TestCorrelateConflicts(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	c.Add(ebpfDrop(10*ms, 1, 3000, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Add(dropmonDrop(11*ms, 3000, "NOT_SPECIFIED", "__udp4_lib_rcv+0x4bc"))
	c.Add(ebpfDrop(20*ms, 2, 3001, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	c.Add(dropmonDrop(21*ms, 3001, "NO_SOCKET", "udp_queue_rcv_one_skb+0x10"))
	c.Flush()
	if len(*out) != 2 {
		t.Fatalf("%d records: %+v", len(*out), *out)
	}
	want := []string{"reason: ebpf NO_SOCKET, dropmon NOT_SPECIFIED", "location: ebpf __udp4_lib_rcv, dropmon udp_queue_rcv_one_skb"}
	for i, r := range *out {
		if r.verdict != VerdictConflict || len(r.conflicts) != 1 || r.conflicts[0] != want[i] {
			t.Errorf("record %d: %+v, want conflict %q", i, r, want[i])
		}
	}
	if st := c.Stats(); st.Disagreement[0][1] != 2 {
		t.Errorf("disagreement not counted: %+v", st)
	}
}

// TestCorrelateSkew: NET_DM's wall-clock timestamps may be off by a few
// milliseconds; within Skew they join, beyond it both records say the
// other observer missed the packet.
func TestCorrelateSkew(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon"), Skew: 20 * time.Millisecond})
	c.Add(ebpfDrop(100*ms, 1, 4000, "NO_SOCKET", "f+0x1"))
	c.Add(dropmonDrop(100*ms-15*ms, 4000, "NO_SOCKET", "f+0x1"))
	c.Add(ebpfDrop(200*ms, 2, 4001, "NO_SOCKET", "f+0x1"))
	c.Add(dropmonDrop(200*ms+30*ms, 4001, "NO_SOCKET", "f+0x1"))
	c.Flush()
	var got []string
	for _, r := range *out {
		got = append(got, r.verdict.String())
	}
	if fmt.Sprint(got) != "[confirmed unconfirmed unconfirmed]" {
		t.Errorf("verdicts %v, want [confirmed unconfirmed unconfirmed]", got)
	}
	if r := (*out)[1]; r.observers["dropmon"] != StatusMissed {
		t.Errorf("the lone ebpf record should say dropmon missed it: %+v", r)
	}
}

func TestCorrelateWindowAndLate(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon"), Window: 100 * time.Millisecond})
	c.Add(ebpfDrop(1000*ms, 1, 5000, "NO_SOCKET", "f+0x1"))
	c.Advance(1050 * ms)
	if len(*out) != 0 {
		t.Fatal("record emitted before its window closed")
	}
	c.Advance(1100 * ms)
	if len(*out) != 1 || (*out)[0].verdict != VerdictUnconfirmed {
		t.Fatalf("after the window: %+v", *out)
	}
	// The NET_DM sighting arrives much later: it is reported on its own, late.
	c.Add(ebpfDrop(1300*ms, 2, 5001, "NO_SOCKET", "f+0x1"))
	c.Advance(1500 * ms)
	c.Add(dropmonDrop(1000*ms, 5000, "NO_SOCKET", "f+0x1"))
	c.Flush()
	last := (*out)[len(*out)-1]
	if !last.late || c.Stats().Late != 1 {
		t.Errorf("late sighting not flagged: %+v, stats %+v", last, c.Stats())
	}
}

func TestCorrelateLossAndBlind(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	c.NoteLoss("dropmon", 90*ms, 110*ms)
	c.Add(ebpfDrop(100*ms, 1, 6000, "NO_SOCKET", "f+0x1"))
	c.Add(ebpfDrop(5000*ms, 2, 6001, "NO_SOCKET", "f+0x1"))
	consume := ebpfDrop(5001*ms, 3, 6002, "", "icmp_rcv+0x259")
	consume.Fate = FateConsume
	c.Add(consume)
	noMAC := ebpfDrop(5002*ms, 4, 6003, "NO_SOCKET", "f+0x1")
	noMAC.HadMAC = false
	c.Add(noMAC)
	c.Flush()
	want := []struct {
		verdict Verdict
		dropmon ObserverStatus
	}{
		{VerdictSingle, StatusLost},
		{VerdictUnconfirmed, StatusMissed},
		{VerdictSingle, StatusBlind},
		{VerdictSingle, StatusBlind},
	}
	if len(*out) != len(want) {
		t.Fatalf("%d records: %+v", len(*out), *out)
	}
	for i, w := range want {
		if r := (*out)[i]; r.verdict != w.verdict || r.observers["dropmon"] != w.dropmon {
			t.Errorf("record %d: verdict %s dropmon %s, want %s %s", i, r.verdict, r.observers["dropmon"], w.verdict, w.dropmon)
		}
	}
}

// TestCorrelateIdenticalFlood: a flood of identical packets (same headers)
// pairs one NET_DM sighting with one eBPF sighting each, in order.
func TestCorrelateIdenticalFlood(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	const n = 500
	for i := uint64(0); i < n; i++ {
		c.Add(ebpfDrop(1000*ms+i*10000, 0x1000+i%7, 7000, "NO_SOCKET", "f+0x1"))
	}
	for i := uint64(0); i < n; i++ {
		c.Add(dropmonDrop(1000*ms+i*10000+500, 7000, "NO_SOCKET", "f+0x1"))
	}
	c.Flush()
	if len(*out) != n {
		t.Fatalf("%d records, want %d", len(*out), n)
	}
	for i, r := range *out {
		if r.verdict != VerdictConfirmed {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
}

func TestCorrelateBoundedMemory(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "kmod"), MaxPending: 100})
	for i := uint64(0); i < 10000; i++ {
		c.Add(ebpfDrop(i*1000, i+1, uint16(i), "NO_SOCKET", "f+0x1"))
		if len(c.pending) > 100 {
			t.Fatalf("%d pending records, bound is 100", len(c.pending))
		}
	}
	c.Flush()
	if len(*out) != 10000 || c.Stats().Forced != 9900 {
		t.Errorf("%d records, %d forced", len(*out), c.Stats().Forced)
	}
	if len(c.bySkb) != 0 || len(c.byHash) != 0 {
		t.Errorf("indexes not emptied: %d skb, %d hash", len(c.bySkb), len(c.byHash))
	}
	if !strings.Contains(VerdictConflict.String()+StatusLost.String(), "conflictlost") {
		t.Error("names")
	}
}

// TestCorrelateEarlyIsNoLoss: where no two running observers can join
// (ebpf brings the nf sighting in its own event), a record is whole on
// arrival, so one sent out early because the window is full is no loss
// of the correlator's (a flood of delivered packets at 130k pps fills a
// 500 ms window of 65536).
func TestCorrelateEarlyIsNoLoss(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "nf"), MaxPending: 100})
	for i := uint64(0); i < 1000; i++ {
		c.Add(ebpfDrop(i*1000, i+1, uint16(i), "NO_SOCKET", "f+0x1"))
	}
	c.Flush()
	st := c.Stats()
	if len(*out) != 1000 || st.Forced != 0 || st.Early != 900 {
		t.Errorf("%d records, %d forced, %d early; want 1000, 0, 900", len(*out), st.Forced, st.Early)
	}
}

// BenchmarkCorrelate4 feeds packets seen by four observers (ebpf with
// netfilter attribution, kmod, dropmon: three events each) and advances
// the clock as a live capture does, so windows close and records are
// emitted and recycled (not forced out by MaxPending).
func BenchmarkCorrelate4(b *testing.B) {
	c, packet := liveStream(time.Millisecond)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		packet()
		n += 3
	}
	c.Flush()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	if st := c.Stats(); st.Forced != 0 {
		b.Errorf("%d records forced out", st.Forced)
	}
}

// liveStream returns a correlator and a function that feeds it one packet
// (ebpf with nf, kmod and dropmon sightings, a packet every 10 µs,
// NET_DM 20 µs later) and advances its clock every 16 packets.
func liveStream(window time.Duration) (*Correlator, func()) {
	c := NewCorrelator(CorrelatorConfig{Running: running("ebpf", "nf", "dropmon", "kmod"), Window: window, MaxLag: window}, func(*FateRecord) {})
	e := ebpfDrop(0, 0, 1, "NETFILTER_DROP", "nf_hook_slow+0x7d")
	e.Hook, e.Family = "LOCAL_IN", "ipv4"
	k := kmodDrop(0, 0, 1)
	d := dropmonDrop(0, 1, "NETFILTER_DROP", "nf_hook_slow+0x7d")
	mono := uint64(1)
	return c, func() {
		mono += 10_000
		sport := uint16(mono / 10_000)
		for _, x := range []*Event{e, k, d} {
			x.Mono = mono
			if x.Source == ObserverDropmon {
				copy(x.Data[14:], udpHeaders(sport))
				x.Mono += 20_000
			} else {
				x.Skb = 0xffff000000000000 + mono
				copy(x.Data, udpHeaders(sport))
			}
			c.Add(x)
		}
		if sport%16 == 0 {
			c.Advance(mono)
		}
	}
}

// TestCorrelateDropmonClones: NET_DM's copies of dropped packets, consumed
// by NET_DM itself, are counted and not reported: by their caller where
// consume_skb has one, else by matching a drop just before.
func TestCorrelateDropmonClones(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	c.Add(ebpfDrop(100*ms, 0xa, 8000, "NO_SOCKET", "f+0x1"))
	withLoc := ebpfDrop(101*ms, 0xb, 8000, "", "net_dm_packet_work+0x408 [drop_monitor]")
	withLoc.Fate = FateConsume
	noLoc := ebpfDrop(102*ms, 0xc, 8000, "", "")
	noLoc.Fate = FateConsume
	c.Add(withLoc)
	c.Add(noLoc)
	c.Add(dropmonDrop(101*ms, 8000, "NO_SOCKET", "f+0x1"))
	// A consume of other headers is a packet of its own.
	other := ebpfDrop(103*ms, 0xd, 8001, "", "")
	other.Fate = FateConsume
	c.Add(other)
	c.Flush()
	if len(*out) != 2 || (*out)[0].verdict != VerdictConfirmed || c.Stats().Clones != 2 {
		t.Errorf("records %+v, clones %d; want the confirmed drop, the other consume, 2 clones", *out, c.Stats().Clones)
	}
}

// TestCorrelateLaggingSource: NET_DM's sightings arrive 1.5 s behind the
// eBPF ones, three times the window. The first ones come late, the ones
// after them hold the clock back and join their records; once NET_DM keeps
// up again the records go out after the window alone within two seconds.
func TestCorrelateLaggingSource(t *testing.T) {
	const (
		base  = 10_000 * ms
		every = 10 * ms
		n     = 400 // 4 s of packets
		lag   = 1500 * ms
		tick  = 100 * ms
	)
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	// Deliveries in the order they reach the correlator: eBPF at once,
	// NET_DM lag later, a clock tick every 100 ms.
	type delivery struct {
		at uint64
		e  *Event
	}
	var ds []delivery
	for i := range n {
		mono := base + uint64(i)*every
		ds = append(ds, delivery{mono, ebpfDrop(mono, 0x1000+uint64(i), uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc")},
			delivery{mono + lag, dropmonDrop(mono, uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc")})
	}
	slices.SortStableFunc(ds, func(a, b delivery) int { return int(int64(a.at - b.at)) })
	next := base + tick
	for _, d := range ds {
		for d.at >= next {
			c.Advance(next)
			next += tick
		}
		c.Add(d.e)
	}
	end := ds[len(ds)-1].at
	// NET_DM caught up: nothing arrives behind the clock any more.
	for ; next <= end+3000*ms; next += tick {
		c.Advance(next)
	}
	if len(*out) < n {
		t.Fatalf("%d records emitted by the clock, want all %d: the lag held them past two seconds", len(*out), n)
	}
	var late, joined int
	for _, r := range *out {
		switch {
		case r.late:
			late++
		case r.verdict == VerdictConfirmed:
			joined++
		}
	}
	// Packets up to 1 s in (their window closed before the first alert
	// came) lose NET_DM; every later one is confirmed.
	firstLate := int((1000*ms)/every) + 1
	if late > firstLate+int(tick/every) || joined < n-firstLate-int(tick/every) {
		t.Errorf("%d late, %d confirmed of %d: want at most %d late, the rest confirmed", late, joined, n, firstLate+int(tick/every))
	}
	if got := c.Stats().MaxLag; got < lag-tick || got > lag+tick {
		t.Errorf("MaxLag %v, want about %v", time.Duration(got), time.Duration(lag))
	}
}

func kmodDrop(mono, skb uint64, sport uint16) *Event {
	return &Event{Source: ObserverKmod, Mono: mono, Skb: skb, Fate: FateDrop, Reason: "NETFILTER_DROP",
		Hook: "LOCAL_IN", Family: "ipv4", Data: udpHeaders(sport)}
}

func nfDrop(mono, skb uint64, sport uint16) *Event {
	e := ebpfDrop(mono, skb, sport, "NETFILTER_DROP", "nf_hook_slow+0x7d")
	e.Hook, e.Family, e.Verdict = "LOCAL_IN", "ipv4", "drop"
	return e
}

// TestCorrelateSkbByIdentity: the module's sighting and the BPF free of
// one skb join however far apart their clocks were read (15 ms on a busy
// 6.12 guest split them into two records), and identical packets that
// reuse one skb address pair each hook drop with its own free.
func TestCorrelateSkbByIdentity(t *testing.T) {
	for _, order := range []string{"kmod first", "ebpf first"} {
		c, out := collect(CorrelatorConfig{Running: running("ebpf", "nf", "kmod")})
		k, e := kmodDrop(10*ms, 0xa000, 3000), nfDrop(25*ms, 0xa000, 3000)
		// The same skb address again for an identical packet, 1 ms later,
		// and a third 40 ms later with the module's clock read 30 ms early.
		k2, e2 := kmodDrop(26*ms, 0xa000, 3000), nfDrop(26*ms+5000, 0xa000, 3000)
		k3, e3 := kmodDrop(40*ms, 0xa000, 3000), nfDrop(70*ms, 0xa000, 3000)
		evs := []*Event{k, e, k2, e2, k3, e3}
		if order == "ebpf first" {
			evs = []*Event{e, e2, e3, k, k2, k3}
		}
		for _, ev := range evs {
			c.Add(ev)
		}
		c.Flush()
		if len(*out) != 3 {
			t.Fatalf("%s: %d records, want 3: %+v", order, len(*out), *out)
		}
		for i, r := range *out {
			if r.verdict != VerdictConfirmed || r.observers["kmod"] != StatusSaw || r.observers["ebpf"] != StatusSaw {
				t.Errorf("%s: record %d %+v, want confirmed by ebpf, nf and kmod", order, i, r)
			}
		}
	}
	// Beyond the window they are two packets.
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "nf", "kmod"), Window: 100 * time.Millisecond})
	c.Add(kmodDrop(10*ms, 0xb000, 3001))
	c.Add(nfDrop(400*ms, 0xb000, 3001))
	c.Flush()
	if len(*out) != 2 {
		t.Errorf("%d records for sightings 390 ms apart with a 100 ms window, want 2", len(*out))
	}
}

// TestCorrelateOverrunIsLoss: NET_DM alerts lost to a socket overrun
// (one ENOBUFS for thousands of alerts) leave a gap on the alerts' own
// clock; ebpf's drops in it are "lost" for dropmon, not "unconfirmed", and
// their number estimates what dropmon lost.
func TestCorrelateOverrunIsLoss(t *testing.T) {
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon"), Window: 100 * time.Millisecond})
	for i := range 300 {
		mono := uint64(i) * ms
		c.Add(ebpfDrop(mono, 0x1000+uint64(i), uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
		if i < 100 || i >= 250 {
			c.Add(dropmonDrop(mono+ms/2, uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
		}
	}
	// The alert read after the overrun was about the packet at 250 ms;
	// the last one before it, 99 ms.
	c.NoteLoss(ObserverDropmon, 99*ms, 250*ms)
	c.Flush()
	var confirmed, lost, unconfirmed int
	for _, r := range *out {
		switch {
		case r.verdict == VerdictConfirmed:
			confirmed++
		case r.observers["dropmon"] == StatusLost:
			lost++
		case r.verdict == VerdictUnconfirmed:
			unconfirmed++
		}
	}
	if confirmed != 150 || lost != 150 || unconfirmed != 0 {
		t.Errorf("confirmed %d lost %d unconfirmed %d, want 150, 150, 0", confirmed, lost, unconfirmed)
	}
	if st := c.Stats(); st.LostBy["dropmon"] != 150 {
		t.Errorf("estimated %d dropmon losses, want 150", st.LostBy["dropmon"])
	}
}

// TestCorrelateAllocsNothing: in a live capture's regime (windows close
// as the clock advances, records are emitted and recycled) joining a
// packet's sightings allocates nothing.
func TestCorrelateAllocsNothing(t *testing.T) {
	testutil.RequireNoRace(t)
	c, packet := liveStream(time.Millisecond)
	for range 20000 { // warm: pools, maps and slices at their size
		packet()
	}
	// None in steady state; a map's rare growth step or the runtime's own
	// bookkeeping may show up once (seen in a VM), an allocation per
	// record would show 5000.
	if n := testutil.Mallocs(5000, packet); n > 2 {
		t.Errorf("%d allocations for 5000 packets, want none in steady state", n)
	}
	if st := c.Stats(); st.Forced != 0 || st.ByVerdict[VerdictConfirmed] < 20000 {
		t.Errorf("records not emitted by their windows: %+v", st)
	}
}

// TestCorrelateStalledProcess: the process stops for 8 s (Ctrl-Z, then
// fg), longer than MaxLag, while packets keep coming: their sightings
// queue in the ring and the NET_DM socket. On resume the first tick comes
// before the backlog is read. Every record must still wait for its NET_DM
// sighting: none late, all confirmed.
func TestCorrelateStalledProcess(t *testing.T) {
	const (
		base  = 10_000 * ms
		every = 10 * ms
		tick  = 100 * ms
		stop  = 1000 * ms // the process stops 1 s in
		cont  = 9000 * ms // and runs again 8 s later
		n     = 1000      // 10 s of packets
	)
	c, out := collect(CorrelatorConfig{Running: running("ebpf", "dropmon")})
	next := base + tick
	advance := func(to uint64) {
		for ; next <= to; next += tick {
			c.Advance(next)
		}
	}
	ebpf := func(i int) *Event {
		mono := base + uint64(i)*every
		return ebpfDrop(mono, 0x1000+uint64(i), uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc")
	}
	dropmon := func(i int) *Event {
		return dropmonDrop(base+uint64(i)*every, uint16(1000+i), "NO_SOCKET", "__udp4_lib_rcv+0x4bc")
	}
	// Running: eBPF at once, NET_DM 50 ms later, ticks every 100 ms.
	i := 0
	for ; base+uint64(i)*every < base+stop; i++ {
		advance(base + uint64(i)*every)
		c.Add(ebpf(i))
		if i >= 5 {
			c.Add(dropmon(i - 5))
		}
	}
	// Stopped until cont. Then: a tick, the ring's backlog, a tick, the
	// socket's backlog (NET_DM's are parsed more slowly), and on.
	next = base + cont
	c.Advance(next)
	next += tick
	resumed := int((cont) / every)
	for j := i; j < resumed; j++ {
		c.Add(ebpf(j))
	}
	c.Advance(next)
	next += tick
	for j := i - 5; j < resumed; j++ {
		c.Add(dropmon(j))
	}
	for j := resumed; j < n; j++ {
		advance(base + uint64(j)*every)
		c.Add(ebpf(j))
		c.Add(dropmon(j))
	}
	advance(base + uint64(n)*every + 3000*ms)
	c.Flush()
	var late, confirmed int
	for _, r := range *out {
		if r.late {
			late++
		}
		if r.verdict == VerdictConfirmed {
			confirmed++
		}
	}
	if len(*out) != n || late != 0 || confirmed != n {
		t.Errorf("%d records, %d late, %d confirmed; want %d, none late, all confirmed", len(*out), late, confirmed, n)
	}
}
