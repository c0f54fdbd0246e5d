package fate

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Observer names. "nf" is the netfilter attribution of the ebpf source: BPF
// programs on the netfilter hooks (or nf_hook_slow), independent of the
// kfree_skb tracepoint that reports the drop.
const (
	ObserverEBPF    = "ebpf"
	ObserverNF      = "nf"
	ObserverDropmon = "dropmon"
	ObserverKmod    = "kmod"
)

// Observers lists every observer pktfate knows, in report order.
var Observers = []string{ObserverEBPF, ObserverNF, ObserverDropmon, ObserverKmod}

// ObserverStatus says what one observer knows of a packet.
type ObserverStatus uint8

const (
	// StatusNotRunning: the observer was not running in this capture.
	StatusNotRunning ObserverStatus = iota
	// StatusSaw: the observer reported the packet.
	StatusSaw
	// StatusBlind: the observer cannot see such a packet by design (NET_DM
	// reports no consumed packets and no packet without a MAC header; the
	// netfilter observers see only packets freed inside a hook).
	StatusBlind
	// StatusLost: the observer lost events around the packet's time, so its
	// silence proves nothing.
	StatusLost
	// StatusMissed: the observer was running, could have seen the packet,
	// lost nothing, and did not report it.
	StatusMissed
)

var statusNames = [...]string{"not_running", "saw", "blind", "lost", "missed"}

func (s ObserverStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status_%d", s)
}

// Verdict is how far the observers agree about a packet's fate.
type Verdict uint8

const (
	// VerdictSingle: one observer saw it; none other could have.
	VerdictSingle Verdict = iota
	// VerdictConfirmed: two or more independent observers saw it and agree.
	VerdictConfirmed
	// VerdictConflict: observers that saw it disagree on fate, reason or location.
	VerdictConflict
	// VerdictUnconfirmed: another observer should have seen it and did not.
	VerdictUnconfirmed
)

var verdictNames = [...]string{"single", "confirmed", "conflict", "unconfirmed"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict_%d", v)
}

// Sighting is what one observer reported of a packet.
type Sighting struct {
	Observer string
	Mono     uint64
	Fate     Fate
	Reason   string
	Location string
	Hook     string
}

// ObserverReport is one observer's part in a FateRecord.
type ObserverReport struct {
	Name   string
	Status ObserverStatus
	// Why explains StatusBlind and StatusNotRunning.
	Why string
	// Sighting is valid with StatusSaw.
	Sighting Sighting
}

// FateRecord joins what every observer saw of one packet.
type FateRecord struct {
	// ID numbers records in emission order, from 1.
	ID uint64
	// Event is the most complete sighting's event (the ebpf one when there
	// is one); its Fate, Reason, Location, Hook, Family and Verdict are the
	// agreed answer, filled in from other observers where it lacked them.
	Event *Event
	// Observers has one entry per known observer, in Observers order.
	Observers []ObserverReport
	Verdict   Verdict
	// Conflicts describes each disagreement ("reason: ebpf NO_SOCKET, dropmon NOT_SPECIFIED").
	Conflicts []string
	// Late is set when a sighting arrived after the record's window had
	// closed: it could not be joined with the others' sightings.
	Late bool

	sightings []Sighting
	mono      uint64 // earliest sighting
	skb       uint64
	skbMono   uint64 // sighting that brought skb: the others' clock
	hash      uint64
	hadMAC    bool
	ifindex   uint32
	done      bool
	// Intrusive chains of the bySkb and byHash indexes, oldest first.
	nextSkb, nextHash *FateRecord
}

// Confirmations returns the names of the observers that saw the packet.
func (r *FateRecord) Confirmations() []string {
	var out []string
	for _, o := range r.Observers {
		if o.Status == StatusSaw {
			out = append(out, o.Name)
		}
	}
	return out
}

// CorrelatorConfig configures a Correlator.
type CorrelatorConfig struct {
	// Running names the observers running in this capture.
	Running []string
	// Listed names observers that do not run but are listed in every
	// record as not running (sources asked for that cannot run here); nil
	// lists every known observer (Observers).
	Listed []string
	// Window is how long a record waits for other observers' sightings
	// after its first one (default 500ms). NET_DM sends alerts from a
	// kworker, so its sightings arrive later than eBPF's.
	Window time.Duration
	// Skew is the largest time difference between sightings joined without
	// a shared skb address: NET_DM's wall-clock timestamps converted to
	// the monotonic clock (default 20ms).
	Skew time.Duration
	// SkbSkew is how far a sighting stamped at the free may come before
	// a sighting of the same skb stamped when it entered a hook (the
	// module's): they share one clock, so only a little (default 1ms).
	// Joins by skb address are bounded by Window, not by this: a hook entry
	// can come long before the free on a busy machine.
	SkbSkew time.Duration
	// Blind says why a running observer could not have seen the packet of
	// a record, or "" (fate.Source.Blind of the observer's source); nil
	// uses KnownBlind alone.
	Blind func(observer string, r *FateRecord) string
	// Record, when set, receives the correlator's input as a recording
	// (recording.go).
	Record *Recorder
	// MaxPending bounds the records waiting in the window (default 65536);
	// past it the oldest is emitted early.
	MaxPending int
	// MaxLag bounds how far behind the clock a source may fall before its
	// sightings are reported late (default 5s); see Advance.
	MaxLag time.Duration
}

// CorrelatorStats counts what the correlator did besides joining.
type CorrelatorStats struct {
	Records uint64
	// Late counts records begun by a sighting that arrived after its own
	// window closed (a source fell behind, or its clock is off).
	Late uint64
	// Forced counts records emitted before their window closed because
	// MaxPending was reached, while another observer's sighting could
	// still have joined them. Where no two running observers can join
	// (ebpf with its own netfilter attribution, say), every record is
	// whole when it arrives, and going out early loses nothing: those
	// are counted in Early instead.
	Forced uint64
	// Early counts records emitted before their window closed because
	// MaxPending was reached, in a capture where nothing could join them.
	Early uint64
	// MaxLag is the furthest any source's sightings arrived behind the
	// clock (ns): how long records waited beyond the window for it.
	MaxLag uint64
	// Clones counts consume sightings of the copies NET_DM makes of
	// dropped packets for its alerts: pktfate's own doing, not reported.
	Clones uint64
	// ByVerdict counts records by verdict.
	ByVerdict [4]uint64
	// LostBy counts, per observer, records it could have seen but whose
	// time falls in one of its loss intervals (StatusLost): an estimate
	// of what it lost, from what the others saw.
	LostBy map[string]uint64
	// Observers are the running observers, in report order.
	Observers []string
	// Agreement[a][b] (a < b) counts records both observers a and b saw
	// (indices into Observers); Disagreement counts those in conflict.
	Agreement, Disagreement [][]uint64
}

// Correlator joins sightings of the same packet by different observers
// into FateRecords. eBPF and the kernel module share the skb address and
// the clock; NET_DM has neither, so its sightings join by time, in-port
// and a hash of the network and transport headers. Records wait at most
// Window for more sightings, then are emitted in time order; memory is
// bounded by MaxPending. Not safe for concurrent use.
type Correlator struct {
	cfg     CorrelatorConfig
	running map[string]int // index into stats.Observers
	order   []string       // observers listed in records: running or not
	emit    func(*FateRecord)
	pending []*FateRecord // by mono, nearly sorted on arrival
	// pendBuf is pending's backing array: records leave pending at its
	// front, and insert slides it back instead of growing a new array.
	pendBuf []*FateRecord
	// Chains of pending records by skb address and by header hash; each
	// index is kept only when two running observers can use it.
	bySkb, byHash       map[uint64]*FateRecord
	indexSkb, indexHash bool
	losses              map[string][]lossSpan
	lastOut             uint64 // mono of the last emitted record
	now                 uint64 // the clock of the last Advance
	closed              uint64 // records whose window ended by this were emitted
	// How far sightings arrived behind the clock, the most in the current
	// second of the clock and in the one before (whichever source: only
	// the slowest matters).
	lagCur, lagPrev uint64
	lagSecond       uint64
	nextID          uint64
	free            []*FateRecord
	chunk           struct {
		recs      []FateRecord
		events    []Event
		obs       []ObserverReport
		sightings []Sighting
	}
	// orderRun is, for each of order, its index in stats.Observers, or -1
	// when it does not run.
	orderRun []int
	stats    CorrelatorStats
}

type lossSpan struct{ from, to uint64 }

// NewCorrelator returns a Correlator calling emit for every record, in
// time order. The record passed to emit is reused afterwards: copy what
// must be kept.
func NewCorrelator(cfg CorrelatorConfig, emit func(*FateRecord)) *Correlator {
	if cfg.Window == 0 {
		cfg.Window = 500 * time.Millisecond
	}
	if cfg.Skew == 0 {
		cfg.Skew = 20 * time.Millisecond
	}
	if cfg.SkbSkew == 0 {
		cfg.SkbSkew = time.Millisecond
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 65536
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = 5 * time.Second
	}
	running := reportOrder(cfg.Running)
	listed := cfg.Listed
	if listed == nil {
		listed = Observers
	}
	c := &Correlator{
		cfg: cfg, emit: emit,
		running: map[string]int{},
		order:   reportOrder(append(append([]string(nil), running...), listed...)),
		bySkb:   map[uint64]*FateRecord{},
		byHash:  map[uint64]*FateRecord{},
		losses:  map[string][]lossSpan{},
	}
	for i, o := range running {
		c.running[o] = i
	}
	for _, o := range c.order {
		i, ok := c.running[o]
		if !ok {
			i = -1
		}
		c.orderRun = append(c.orderRun, i)
	}
	c.stats.Observers = running
	c.stats.LostBy = map[string]uint64{}
	c.stats.Agreement, c.stats.Disagreement = square(len(running)), square(len(running))
	// eBPF and the module share skb addresses; NET_DM joins by headers.
	c.indexSkb = c.runs(ObserverEBPF) && c.runs(ObserverKmod)
	c.indexHash = c.runs(ObserverDropmon) && (c.runs(ObserverEBPF) || c.runs(ObserverKmod))
	if cfg.Record != nil {
		cfg.Record.write(&Step{Op: StepConfig, Running: running, Window: cfg.Window})
	}
	return c
}

// runs reports whether the observer runs in this capture.
func (c *Correlator) runs(observer string) bool {
	_, ok := c.running[observer]
	return ok
}

// reportOrder returns the distinct names of obs, known observers first in
// Observers order, then the others in their order.
func reportOrder(obs []string) []string {
	var out []string
	for _, o := range Observers {
		if slices.Contains(obs, o) {
			out = append(out, o)
		}
	}
	for _, o := range obs {
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

func square(n int) [][]uint64 {
	m := make([][]uint64, n)
	for i := range m {
		m[i] = make([]uint64, n)
	}
	return m
}

// chainAdd appends r to the chain of key k.
func chainAdd(m map[uint64]*FateRecord, k uint64, r *FateRecord, next func(*FateRecord) **FateRecord) {
	head, ok := m[k]
	if !ok {
		m[k] = r
		return
	}
	for *next(head) != nil {
		head = *next(head)
	}
	*next(head) = r
}

// chainRemove unlinks r from the chain of key k.
func chainRemove(m map[uint64]*FateRecord, k uint64, r *FateRecord, next func(*FateRecord) **FateRecord) {
	head, ok := m[k]
	if !ok {
		return
	}
	if head == r {
		if n := *next(r); n != nil {
			m[k] = n
		} else {
			delete(m, k)
		}
		*next(r) = nil
		return
	}
	for p := head; *next(p) != nil; p = *next(p) {
		if *next(p) == r {
			*next(p) = *next(r)
			*next(r) = nil
			return
		}
	}
}

func skbNext(r *FateRecord) **FateRecord  { return &r.nextSkb }
func hashNext(r *FateRecord) **FateRecord { return &r.nextHash }

// Stats returns the counters so far (a copy).
func (c *Correlator) Stats() CorrelatorStats {
	st := c.stats
	st.LostBy = maps.Clone(c.stats.LostBy)
	st.Agreement, st.Disagreement = square(len(st.Observers)), square(len(st.Observers))
	for i := range st.Agreement {
		copy(st.Agreement[i], c.stats.Agreement[i])
		copy(st.Disagreement[i], c.stats.Disagreement[i])
	}
	return st
}

// NoteLoss records that an observer lost events between two monotonic
// times: records in that span do not count its silence against it.
func (c *Correlator) NoteLoss(observer string, from, to uint64) {
	if c.cfg.Record != nil {
		c.cfg.Record.write(&Step{Op: StepLoss, Observer: observer, From: from, To: to})
	}
	spans := c.losses[observer]
	if n := len(spans); n > 0 && spans[n-1].to >= from {
		spans[n-1].to = max(spans[n-1].to, to)
	} else {
		spans = append(spans, lossSpan{from, to})
	}
	c.losses[observer] = spans
}

// headerHash hashes the network header and the first 8 bytes after it
// (ports, ICMP type): what every observer captures of the same packet.
func headerHash(e *Event) uint64 {
	d := e.Data
	if e.MACHeader {
		if len(d) < 14 {
			return 0
		}
		d = d[14:]
	}
	n := 0
	switch {
	case len(d) >= 20 && d[0]>>4 == 4:
		n = int(d[0]&0xf)*4 + 8
	case len(d) >= 40 && d[0]>>4 == 6:
		n = 48
	default:
		return 0
	}
	n = min(n, len(d))
	// FNV-1a, 64 bit. Bytes 8 (IPv4 TTL) and 10-11 (checksum) are the same
	// for every observer of one skb, so they stay in.
	h := uint64(14695981039346656037)
	for _, b := range d[:n] {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

func (r *FateRecord) has(observer string) bool {
	for i := range r.sightings {
		if r.sightings[i].Observer == observer {
			return true
		}
	}
	return false
}

// Add joins one event (and, for an ebpf event with netfilter attribution,
// the nf observer's sighting) to a pending record or starts a new one.
func (c *Correlator) Add(e *Event) {
	if c.cfg.Record != nil {
		c.cfg.Record.write(&Step{Op: StepEvent, Event: e})
	}
	s := Sighting{Observer: e.Source, Mono: e.Mono, Fate: e.Fate, Reason: e.Reason, Location: e.Location, Hook: e.Hook}
	hash := headerHash(e)
	if c.isDropmonClone(e, hash) {
		c.stats.Clones++
		return
	}
	r := c.match(e, hash)
	if r == nil {
		r = c.newRecord(e, hash)
		if c.late(e) {
			// Its partners are gone already; sightings as late as it
			// (a source that fell behind) may still join it until the
			// next Advance emits it.
			c.stats.Late++
			r.Late = true
		}
		c.insert(r)
	} else if r.Event.Source != ObserverEBPF && e.Source == ObserverEBPF {
		// Prefer the ebpf event as the record's representative: it has
		// the skb, netns and mark that others lack.
		c.setEvent(r, e)
	}
	c.addSighting(r, s, e)
	c.noteLag(e)
	for len(c.pending) > c.cfg.MaxPending {
		if c.indexSkb || c.indexHash {
			c.stats.Forced++
		} else {
			c.stats.Early++
		}
		c.pop()
	}
}

// late reports whether a sighting that joins no pending record arrived
// after its own window closed (the clock, Advance, is past it) or after
// records well later than it were emitted: whatever it belonged to has
// gone out without it.
func (c *Correlator) late(e *Event) bool {
	w := uint64(c.cfg.Window)
	return (c.closed != 0 && e.Mono+w <= c.closed) || (c.lastOut != 0 && e.Mono+w < c.lastOut)
}

// noteLag keeps how far behind the clock e arrived.
func (c *Correlator) noteLag(e *Event) {
	if c.now <= e.Mono {
		return
	}
	lag := min(c.now-e.Mono, uint64(c.cfg.MaxLag))
	c.lagCur = max(c.lagCur, lag)
	c.stats.MaxLag = max(c.stats.MaxLag, lag)
}

func (c *Correlator) addSighting(r *FateRecord, s Sighting, e *Event) {
	r.sightings = append(r.sightings, s)
	if e.Hook != "" && e.Source == ObserverEBPF {
		r.sightings = append(r.sightings, Sighting{Observer: ObserverNF, Mono: e.Mono, Fate: e.Fate, Reason: e.Reason, Hook: e.Hook})
	}
	if e.Skb != 0 && r.skb == 0 {
		r.skb, r.skbMono = e.Skb, e.Mono
		if c.indexSkb && !r.done {
			chainAdd(c.bySkb, e.Skb, r, skbNext)
		}
	}
	if e.HadMAC {
		r.hadMAC = true
	}
	if r.ifindex == 0 {
		r.ifindex = e.Ifindex
	}
	if e.Mono < r.mono {
		r.mono = e.Mono
	}
}

// isDropmonClone recognises NET_DM's copy of a dropped packet, which it
// frees with consume_skb from its kworker once the alert is sent: by the
// caller (net_dm_*) where consume_skb reports one (6.3+), else by being a
// consume of the very headers of a packet dropped just before.
func (c *Correlator) isDropmonClone(e *Event, hash uint64) bool {
	if !c.runs(ObserverDropmon) || e.Source != ObserverEBPF || e.Fate != FateConsume {
		return false
	}
	if e.Location != "" {
		return strings.HasPrefix(Function(e.Location), "net_dm_")
	}
	if hash == 0 || !c.indexHash {
		return false
	}
	for r := c.byHash[hash]; r != nil; r = r.nextHash {
		if r.Event.Fate == FateDrop && e.Mono >= r.mono && e.Mono-r.mono <= uint64(c.cfg.Window) {
			return true
		}
	}
	return false
}

// match finds the pending record e belongs to: by skb address, else by
// the same headers (and in-port, when both know it) within Skew; of
// those that lack this observer, the closest in time.
//
// An skb address identifies a packet from the moment it enters a hook to
// its free (and is reused right after), so a sighting stamped at hook
// entry (the module's) joins the first free of that skb at or after it,
// and a free joins the latest hook entry before it, however long the
// packet spent in between (up to Window): the key is the packet, time
// only bounds it.
func (c *Correlator) match(e *Event, hash uint64) *FateRecord {
	if e.Skb != 0 && c.indexSkb {
		if r := c.matchSkb(e, hash); r != nil {
			return r
		}
	}
	if hash == 0 || !c.indexHash {
		return nil
	}
	// Identical packets (IPv6 has no IP ID) share a hash: take the record
	// closest in time, on the clock of its skb-bearing sighting when it
	// has one.
	var best *FateRecord
	var bestDiff uint64
	for r := c.byHash[hash]; r != nil; r = r.nextHash {
		t := r.mono
		if r.skb != 0 {
			t = r.skbMono
		}
		d := absDiff(t, e.Mono)
		if r.has(e.Source) || d > uint64(c.cfg.Skew) || (best != nil && d >= bestDiff) {
			continue
		}
		if e.Skb != 0 && r.skb != 0 {
			continue // both know the skb, and it differs
		}
		if e.Ifindex != 0 && r.ifindex != 0 && e.Ifindex != r.ifindex {
			continue
		}
		best, bestDiff = r, d
	}
	return best
}

// matchSkb finds the record of the same skb that e completes.
func (c *Correlator) matchSkb(e *Event, hash uint64) *FateRecord {
	tol, window := uint64(c.cfg.SkbSkew), uint64(c.cfg.Window)
	var best *FateRecord
	var bestGap uint64
	for r := c.bySkb[e.Skb]; r != nil; r = r.nextSkb {
		// Freed skbs are reused within microseconds: the headers must
		// agree too, where both sides captured them.
		if r.has(e.Source) || (hash != 0 && r.hash != 0 && hash != r.hash) {
			continue
		}
		entry, free := r.skbMono, e.Mono
		if atHookEntry(e.Source) {
			entry, free = e.Mono, r.skbMono
		}
		gap := absDiff(entry, free)
		if gap > window {
			continue
		}
		if free+tol < entry {
			// Out of order: only when nothing in order fits (the two
			// clocks were read in one free, say, in either order).
			gap += window
		}
		if best == nil || gap < bestGap {
			best, bestGap = r, gap
		}
	}
	return best
}

// atHookEntry reports whether an observer's sightings may be stamped
// before the free (the module stamps in its own kfree_skb probe, which can
// run well before the BPF program on a busy machine, or at hook entry);
// the ebpf observer stamps the free itself.
func atHookEntry(observer string) bool { return observer == ObserverKmod }

func (c *Correlator) newRecord(e *Event, hash uint64) *FateRecord {
	var r *FateRecord
	if n := len(c.free); n > 0 {
		r, c.free = c.free[n-1], c.free[:n-1]
		ev, sightings, obs := r.Event, r.sightings[:0], r.Observers[:0]
		*r = FateRecord{Event: ev, sightings: sightings, Observers: obs}
	} else {
		r = c.allocRecord()
	}
	c.setEvent(r, e)
	r.mono, r.hash = e.Mono, hash
	if hash != 0 && c.indexHash {
		chainAdd(c.byHash, hash, r, hashNext)
	}
	return r
}

// recordChunk is how many records allocRecord makes at once.
const recordChunk = 256

// allocRecord returns a new record, its event and its slices' arrays
// carved from chunks made recordChunk records at a time: while the window
// fills (the first Window of a capture, or a burst deeper than any
// before) records are made faster than the free list gives them back,
// and one allocation a record, plus its slices growing one by one, cost
// the capture's first half second more than the correlation itself.
func (c *Correlator) allocRecord() *FateRecord {
	if len(c.chunk.recs) == 0 {
		n := len(c.order)
		c.chunk.recs = make([]FateRecord, recordChunk)
		c.chunk.events = make([]Event, recordChunk)
		c.chunk.obs = make([]ObserverReport, recordChunk*n)
		c.chunk.sightings = make([]Sighting, recordChunk*sightingsCap)
	}
	n := len(c.order)
	r := &c.chunk.recs[0]
	r.Event = &c.chunk.events[0]
	r.Observers = c.chunk.obs[0:0:n]
	r.sightings = c.chunk.sightings[0:0:sightingsCap]
	c.chunk.recs, c.chunk.events = c.chunk.recs[1:], c.chunk.events[1:]
	c.chunk.obs, c.chunk.sightings = c.chunk.obs[n:], c.chunk.sightings[sightingsCap:]
	return r
}

// sightingsCap is the sightings a new record has room for: one per
// observer (ebpf, nf, dropmon, kmod); more grow the slice.
const sightingsCap = 4

func (c *Correlator) setEvent(r *FateRecord, e *Event) {
	data := append(r.Event.Data[:0], e.Data...)
	*r.Event = *e
	r.Event.Data = data
}

// insert keeps pending sorted by mono; arrivals are nearly in order, so
// the search starts at the end.
func (c *Correlator) insert(r *FateRecord) {
	if len(c.pending) == cap(c.pending) && len(c.pending) < cap(c.pendBuf)/2 {
		// Full at the end of the array with its front free: slide back.
		n := copy(c.pendBuf[:cap(c.pendBuf)], c.pending)
		clear(c.pendBuf[n:cap(c.pendBuf)])
		c.pending = c.pendBuf[:n]
	}
	i := len(c.pending)
	for i > 0 && c.pending[i-1].mono > r.mono {
		i--
	}
	if i == len(c.pending) {
		c.pending = append(c.pending, r)
	} else {
		c.pending = slices.Insert(c.pending, i, r)
	}
	if cap(c.pending) > cap(c.pendBuf) {
		c.pendBuf = c.pending[:0] // grown: the new array
	}
}

// Advance emits every record whose window closed before now (monotonic ns),
// less the lag of the slowest source: a source that delivers its sightings
// late (NET_DM's kworker or the module's queue under a drop storm) holds
// records back by as much as its sightings arrived behind the clock in the
// last one to two seconds, up to MaxLag, rather than have every record go
// out without it and its sightings come in as records of their own.
func (c *Correlator) Advance(now uint64) {
	if c.cfg.Record != nil {
		c.cfg.Record.write(&Step{Op: StepAdvance, Now: now})
	}
	var jump uint64
	if c.now != 0 && now > c.now+uint64(stallGap) {
		jump = now - c.now
	}
	c.now = max(c.now, now)
	if sec := c.now / uint64(time.Second); sec != c.lagSecond {
		c.lagPrev = 0
		if sec == c.lagSecond+1 {
			c.lagPrev = c.lagCur
		}
		c.lagCur, c.lagSecond = 0, sec
	}
	if jump > 0 {
		// The clock jumped: this process did not run meanwhile (stopped,
		// Ctrl-Z then fg; starved of CPU), and what its sources queued is
		// not read yet. Every source is as far behind as the jump: it
		// counts as their lag, whatever MaxLag (the sources' clocks are
		// not in doubt), so records wait one to two seconds for the
		// backlog instead of going out without the sightings in it.
		c.lagCur = max(c.lagCur, jump)
		c.stats.MaxLag = max(c.stats.MaxLag, jump)
	}
	var closed uint64
	if l := max(c.lagCur, c.lagPrev); c.now > l {
		closed = c.now - l
	}
	c.closed = max(c.closed, closed)
	for len(c.pending) > 0 && c.pending[0].mono+uint64(c.cfg.Window) <= c.closed {
		c.pop()
	}
}

// stallGap is the longest pause between two Advance calls (ticks every
// 100 ms) taken for a busy machine's; a longer one is a jump of the clock.
const stallGap = time.Second

// Flush emits every pending record (at the end of a capture).
func (c *Correlator) Flush() {
	if c.cfg.Record != nil {
		c.cfg.Record.write(&Step{Op: StepFlush})
	}
	for len(c.pending) > 0 {
		c.pop()
	}
}

func (c *Correlator) pop() {
	r := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	c.lastOut = max(c.lastOut, r.mono)
	c.finalize(r)
}

func (c *Correlator) finalize(r *FateRecord) {
	r.done = true
	if r.skb != 0 && c.indexSkb {
		chainRemove(c.bySkb, r.skb, r, skbNext)
	}
	if r.hash != 0 && c.indexHash {
		chainRemove(c.byHash, r.hash, r, hashNext)
	}
	c.judge(r)
	c.nextID++
	r.ID = c.nextID
	c.stats.Records++
	c.stats.ByVerdict[r.Verdict]++
	c.emit(r)
	c.free = append(c.free, r)
	c.pruneLosses(r.mono)
}

// pruneLosses forgets loss spans that ended more than a window before t.
func (c *Correlator) pruneLosses(t uint64) {
	for name, spans := range c.losses {
		i := 0
		for i < len(spans) && spans[i].to+uint64(c.cfg.Window) < t {
			i++
		}
		if i > 0 {
			c.losses[name] = spans[i:]
		}
	}
}

func (c *Correlator) lostAt(observer string, t uint64) bool {
	for _, s := range c.losses[observer] {
		if t+uint64(c.cfg.Window) >= s.from && t <= s.to+uint64(c.cfg.Window) {
			return true
		}
	}
	return false
}

// judge fills the agreed answer, each observer's status and the verdict.
func (c *Correlator) judge(r *FateRecord) {
	e := r.Event
	// Fill what the representative lacks from the other sightings.
	for _, s := range r.sightings {
		if e.Hook == "" && s.Hook != "" {
			e.Hook = s.Hook
			if e.Verdict == "" {
				e.Verdict = "drop"
			}
		}
		if e.Reason == "" && s.Fate == FateDrop {
			e.Reason = s.Reason
		}
		if e.Location == "" {
			e.Location = s.Location
		}
	}
	r.Observers = r.Observers[:0]
	saw := 0
	missed := false
	for k, name := range c.order {
		o := ObserverReport{Name: name}
		switch {
		case c.orderRun[k] < 0:
			o.Status, o.Why = StatusNotRunning, "not running"
		case r.has(name):
			o.Status = StatusSaw
			for _, s := range r.sightings {
				if s.Observer == name {
					o.Sighting = s
					break
				}
			}
			saw++
		default:
			if why := c.blindness(name, r); why != "" {
				o.Status, o.Why = StatusBlind, why
			} else if c.lostAt(name, r.mono) {
				o.Status = StatusLost
				c.stats.LostBy[name]++
			} else {
				o.Status = StatusMissed
				missed = true
			}
		}
		r.Observers = append(r.Observers, o)
	}
	r.Conflicts = conflicts(r, r.Conflicts[:0])
	switch {
	case len(r.Conflicts) > 0:
		r.Verdict = VerdictConflict
	case saw >= 2:
		r.Verdict = VerdictConfirmed
	case missed:
		r.Verdict = VerdictUnconfirmed
	default:
		r.Verdict = VerdictSingle
	}
	// r.Observers is in c.order, so c.orderRun indexes both.
	for ka, a := range r.Observers {
		if a.Status != StatusSaw {
			continue
		}
		for kb, b := range r.Observers {
			i, j := c.orderRun[ka], c.orderRun[kb]
			if j <= i || b.Status != StatusSaw {
				continue
			}
			c.stats.Agreement[i][j]++
			if r.Verdict == VerdictConflict {
				c.stats.Disagreement[i][j]++
			}
		}
	}
}

// blindness says why an observer could not have seen this packet, or "".
func (c *Correlator) blindness(observer string, r *FateRecord) string {
	if c.cfg.Blind != nil {
		return c.cfg.Blind(observer, r)
	}
	return KnownBlind(observer, r)
}

// KnownBlind says why an observer cannot see the packet of r by the way it
// works, whatever the kernel and the capture: NET_DM reports drops only,
// and only of packets with a MAC header; the netfilter observers report
// only packets freed inside a netfilter hook. A source adds what depends
// on its attachment (fate.Source.Blind).
func KnownBlind(observer string, r *FateRecord) string {
	e := r.Event
	switch observer {
	case ObserverDropmon:
		if e.Fate != FateDrop {
			return "drop_monitor reports drops only"
		}
		if r.skb != 0 && !r.hadMAC {
			return "drop_monitor skips packets without a MAC header"
		}
	case ObserverNF, ObserverKmod:
		if e.Hook == "" {
			return "sees only packets freed inside a netfilter hook"
		}
	}
	return ""
}

// Mono returns the time of the record's earliest sighting (monotonic ns).
func (r *FateRecord) Mono() uint64 { return r.mono }

// conflicts lists where the observers that saw the packet disagree.
func conflicts(r *FateRecord, out []string) []string {
	var first *Sighting
	for i := range r.sightings {
		s := &r.sightings[i]
		if first == nil {
			first = s
			continue
		}
		if s.Fate != first.Fate {
			out = append(out, fmt.Sprintf("fate: %s %s, %s %s", first.Observer, first.Fate, s.Observer, s.Fate))
		}
		if s.Reason != "" && first.Reason != "" && s.Reason != first.Reason {
			out = append(out, fmt.Sprintf("reason: %s %s, %s %s", first.Observer, first.Reason, s.Observer, s.Reason))
		}
		if s.Location != "" && first.Location != "" && Function(s.Location) != Function(first.Location) {
			out = append(out, fmt.Sprintf("location: %s %s, %s %s", first.Observer, Function(first.Location), s.Observer, Function(s.Location)))
		}
		if s.Hook != "" && first.Hook != "" && s.Hook != first.Hook {
			out = append(out, fmt.Sprintf("hook: %s %s, %s %s", first.Observer, first.Hook, s.Observer, s.Hook))
		}
	}
	return out
}

// ObserverList formats the names of the observers that saw the packet
// ("ebpf+dropmon").
func (r *FateRecord) ObserverList() string {
	return strings.Join(r.Confirmations(), "+")
}
