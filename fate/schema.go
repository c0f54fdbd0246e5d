package fate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The NDJSON schema: one definition of every line pktfate writes (trace
// --output-json, the pcapng summary comment, --record) and reads back
// (pktfate report, ReadRecording). The renderer's fast writer is tested
// against these types field by field; docs/schema.json publishes them as
// JSON Schema. A name means the same thing in every line type.

// SchemaVersion is written in every summary line ("schema") and in the
// config line of a recording. Files without it are version 0 (before the
// schema was defined): their summary's "lost" is an object of
// "<observer>_<counter>" keys, and their event lines name the netfilter
// verdict "verdict".
const SchemaVersion = 1

// Line types.
const (
	LineEvent   = "event"
	LineFate    = "fate"
	LineSummary = "summary"
)

// Time is a time in the schema: RFC 3339 in UTC with all nine digits of
// nanoseconds ("2026-11-27T04:10:00.123456789Z"), so that lines sort and
// align as text.
type Time struct{ time.Time }

// TimeLayout is the layout of Time.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimeLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON accepts any RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error { return t.Time.UnmarshalJSON(b) }

// PacketFields are the packet's fields, shared by event and fate lines.
type PacketFields struct {
	Ifindex uint32 `json:"ifindex,omitempty"`
	Ifname  string `json:"ifname,omitempty"`
	Netns   uint32 `json:"netns,omitempty"`
	// NetnsFrom is "iif" when nothing in the skb named its namespace and
	// the netns filter placed it by the index of the interface it arrived
	// on: a guess (another namespace's interface of that index would be
	// taken for it); omitted when the skb named it.
	NetnsFrom string `json:"netns_from,omitempty"`
	Mark      uint32 `json:"mark"`
	// Len is the packet's length from its network header: the IP
	// header's own length where it is IP, else what the observer counted.
	Len uint32 `json:"len"`
	// Proto is the innermost protocol decoded ("udp"); EtherType is given
	// instead when nothing could be decoded.
	Proto     string `json:"proto,omitempty"`
	EtherType uint16 `json:"ethertype,omitempty"`
	Src       string `json:"src,omitempty"`
	Dst       string `json:"dst,omitempty"`
	Sport     uint16 `json:"sport,omitempty"`
	Dport     uint16 `json:"dport,omitempty"`
	TCPFlags  string `json:"tcp_flags,omitempty"`
	ICMPType  *uint8 `json:"icmp_type,omitempty"`
	ICMPCode  *uint8 `json:"icmp_code,omitempty"`
	// PayloadLen is the transport payload's length from the headers
	// (UDP, TCP).
	PayloadLen int `json:"payload_len,omitempty"`
}

// Packet returns the decoded headers the fields describe.
func (f *PacketFields) Packet() (Packet, error) {
	p := Packet{Proto: f.Proto, Sport: f.Sport, Dport: f.Dport, PayloadLen: f.PayloadLen}
	var err error
	if p.Src, err = ParseAddr(f.Src); err != nil {
		return p, fmt.Errorf("src: %w", err)
	}
	if p.Dst, err = ParseAddr(f.Dst); err != nil {
		return p, fmt.Errorf("dst: %w", err)
	}
	if f.ICMPType != nil {
		p.ICMPType = *f.ICMPType
	}
	if f.ICMPCode != nil {
		p.ICMPCode = *f.ICMPCode
	}
	for _, c := range f.TCPFlags {
		i := strings.IndexRune(tcpFlagNames, c)
		if i < 0 {
			return p, fmt.Errorf("tcp_flags %q: unknown flag %q", f.TCPFlags, c)
		}
		p.TCPFlags |= 1 << i
	}
	return p, nil
}

// WhereFields say where and why a packet was freed.
type WhereFields struct {
	Fate     string `json:"fate"`
	Reason   string `json:"reason,omitempty"`
	Location string `json:"location,omitempty"`
	// Hook, Family and NFVerdict are set for packets freed inside a
	// netfilter hook's chain.
	Hook      string `json:"hook,omitempty"`
	Family    string `json:"family,omitempty"`
	NFVerdict string `json:"nf_verdict,omitempty"`
}

// EventLine is one observer's sighting ("type":"event").
type EventLine struct {
	Type   string `json:"type"`
	Time   Time   `json:"time"`
	Source string `json:"source"`
	WhereFields
	PacketFields
	// SkbLen is skb->len when the packet was freed (ebpf, kmod): what is
	// left of the packet at the layer that freed it.
	SkbLen uint32 `json:"skb_len,omitempty"`
	CPU    uint32 `json:"cpu"`
	// Skb is the kernel address of the sk_buff, in hex ("0xffff...").
	Skb string `json:"skb,omitempty"`

	// Recording only (--record; the NDJSON output leaves them out): what
	// the correlator needs to join the sighting again.
	Mono         uint64 `json:"mono,omitempty"`
	ReasonCode   uint32 `json:"reason_code,omitempty"`
	LocationAddr uint64 `json:"location_addr,omitempty"`
	Data         []byte `json:"data,omitempty"`
	MACHeader    bool   `json:"mac_header,omitempty"`
	HadMAC       bool   `json:"had_mac,omitempty"`
}

// ObserverLine is one observer's part of a fate line.
type ObserverLine struct {
	Status string `json:"status"`
	// Why explains a blind observer.
	Why string `json:"why,omitempty"`
	// Reason and Location are what an observer that saw the packet said.
	Reason   string `json:"reason,omitempty"`
	Location string `json:"location,omitempty"`
}

// FateLine is one packet's fate record ("type":"fate").
type FateLine struct {
	Type string `json:"type"`
	ID   uint64 `json:"id"`
	Time Time   `json:"time"`
	// Verdict is how far the observers agree ("confirmed").
	Verdict string `json:"verdict"`
	WhereFields
	PacketFields
	// Late is set when a sighting came after the record's window closed.
	Late      bool          `json:"late,omitempty"`
	Observers ObserverLines `json:"observers"`
	Conflicts []string      `json:"conflicts,omitempty"`
}

// ObserverLines keeps the observers of a fate line in report order.
type ObserverLines []NamedObserver

// NamedObserver is one entry of ObserverLines.
type NamedObserver struct {
	Name string
	ObserverLine
}

// MarshalJSON writes an object keyed by observer, in order.
func (o ObserverLines) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, n := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(n.Name)
		v, err := json.Marshal(n.ObserverLine)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object, keeping its order.
func (o *ObserverLines) UnmarshalJSON(data []byte) error {
	*o = nil
	return decodeObject(data, func(k string, dec *json.Decoder) error {
		var v ObserverLine
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*o = append(*o, NamedObserver{Name: k, ObserverLine: v})
		return nil
	})
}

// Counts is a table of counts, written as a JSON object in its order
// (largest first, as Sorted returns it).
type Counts []Counter

// MarshalJSON writes an object in order.
func (c Counts) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, x := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(x.Name)
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(x.Value, 10))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object, keeping its order.
func (c *Counts) UnmarshalJSON(data []byte) error {
	*c = nil
	return decodeObject(data, func(k string, dec *json.Decoder) error {
		var v uint64
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%q is not a count: %w", k, err)
		}
		*c = append(*c, Counter{Name: k, Value: v})
		return nil
	})
}

// Map returns the counts as a map.
func (c Counts) Map() map[string]uint64 {
	m := make(map[string]uint64, len(c))
	for _, x := range c {
		m[x.Name] += x.Value
	}
	return m
}

// decodeObject calls fn for each member of a JSON object, in order.
func decodeObject(data []byte, fn func(key string, dec *json.Decoder) error) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %.40s", data)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		if err := fn(k, dec); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

// PairLine is one row of the agreement table.
type PairLine struct {
	Observers [2]string `json:"observers"`
	BothSaw   uint64    `json:"both_saw"`
	Conflicts uint64    `json:"conflicts"`
}

// SourceLine says whether a source ran.
type SourceLine struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	Reason  string `json:"reason,omitempty"`
}

// SummaryLine ends a capture ("type":"summary").
type SummaryLine struct {
	Type     string `json:"type"`
	Schema   int    `json:"schema"`
	Start    Time   `json:"start"`
	End      Time   `json:"end"`
	Events   uint64 `json:"events"`
	Drops    uint64 `json:"drops"`
	Consumed uint64 `json:"consumed"`
	// ByReason and ByLocation count drops; ByHook drops inside
	// netfilter, by "family hook".
	ByReason   Counts `json:"by_reason"`
	ByLocation Counts `json:"by_location"`
	ByHook     Counts `json:"by_hook"`
	// Lost is every loss counter, zero or not.
	Lost []Loss `json:"lost"`
	// Complete is true when every loss counter was read and is zero, false
	// when something was lost, null when that is unknown (Unknown says
	// why).
	Complete *bool    `json:"complete"`
	Unknown  []string `json:"unknown,omitempty"`
	// Notes are what the sources told the user that is neither an event
	// nor a loss.
	Notes []string `json:"notes,omitempty"`
	// Ignored counts events not shown because they are not packets'
	// fates (NET_DM's clones, copies released, non-packets).
	Ignored Counts `json:"ignored,omitempty"`
	// With two or more observers: packets (fate records) by verdict and
	// how the observers agreed.
	Fates     *uint64    `json:"fates,omitempty"`
	Verdicts  Counts     `json:"verdicts,omitempty"`
	Agreement []PairLine `json:"agreement,omitempty"`
	Late      *uint64    `json:"late,omitempty"`
	Forced    *uint64    `json:"forced,omitempty"`
	// LostBy estimates, per observer, the packets it lost: ones the
	// others saw at a time it was losing events.
	LostBy  Counts       `json:"lost_by_observer,omitempty"`
	Sources []SourceLine `json:"sources"`
}

// NewEventLine returns the line of one event (without the recording-only
// fields).
func NewEventLine(e *Event) EventLine {
	l := EventLine{Type: LineEvent, Time: Time{e.Time.UTC()}, Source: e.Source, WhereFields: whereOf(e),
		PacketFields: packetOf(e), SkbLen: e.Len, CPU: e.CPU}
	if e.Skb != 0 {
		l.Skb = "0x" + strconv.FormatUint(e.Skb, 16)
	}
	return l
}

// RecordedEventLine returns the line of one event as a recording keeps it.
func RecordedEventLine(e *Event) EventLine {
	l := NewEventLine(e)
	l.Mono, l.ReasonCode, l.LocationAddr = e.Mono, e.ReasonCode, e.LocationAddr
	l.Data, l.MACHeader, l.HadMAC = e.Data, e.MACHeader, e.HadMAC
	return l
}

// Event returns the event a recorded line describes.
func (l *EventLine) Event() (*Event, error) {
	e := &Event{Source: l.Source, Mono: l.Mono, Time: l.Time.Time, CPU: l.CPU, ReasonCode: l.ReasonCode,
		Reason: l.Reason, LocationAddr: l.LocationAddr, Location: l.Location, Netns: l.Netns, NetnsFrom: l.NetnsFrom,
		Ifindex: l.Ifindex, Ifname: l.Ifname, Mark: l.Mark, Len: l.SkbLen, EtherType: l.EtherType,
		Data: l.Data, MACHeader: l.MACHeader, HadMAC: l.HadMAC, Hook: l.Hook, Family: l.Family, Verdict: l.NFVerdict}
	var err error
	if e.Fate, err = ParseFate(l.Fate); err != nil {
		return nil, err
	}
	if e.Packet, err = l.PacketFields.Packet(); err != nil {
		return nil, err
	}
	if l.Skb != "" {
		if e.Skb, err = strconv.ParseUint(strings.TrimPrefix(l.Skb, "0x"), 16, 64); err != nil {
			return nil, fmt.Errorf("skb %q is not a hex address", l.Skb)
		}
	}
	return e, nil
}

// ParseFate reads a fate's name ("drop", "consume").
func ParseFate(s string) (Fate, error) {
	switch s {
	case "drop":
		return FateDrop, nil
	case "consume":
		return FateConsume, nil
	}
	return FateUnknown, fmt.Errorf("unknown fate %q (want drop or consume)", s)
}

func whereOf(e *Event) WhereFields {
	return WhereFields{Fate: e.Fate.String(), Reason: e.Reason, Location: e.Location, Hook: e.Hook, Family: e.Family, NFVerdict: e.Verdict}
}

func packetOf(e *Event) PacketFields {
	p := &e.Packet
	f := PacketFields{Ifindex: e.Ifindex, Ifname: e.Ifname, Netns: e.Netns, Mark: e.Mark, Len: uint32(WireLen(e)), Proto: p.Proto}
	if e.NetnsFrom == NetnsGuessed {
		f.NetnsFrom = NetnsGuessed
	}
	if p.Proto == "" {
		f.EtherType = e.EtherType
	}
	if p.Src.IsValid() {
		f.Src = p.Src.String()
	}
	if p.Dst.IsValid() {
		f.Dst = p.Dst.String()
	}
	switch p.Proto {
	case "udp", "tcp":
		f.Sport, f.Dport, f.PayloadLen = p.Sport, p.Dport, p.PayloadLen
		if p.Proto == "tcp" {
			f.TCPFlags = TCPFlagString(p.TCPFlags)
		}
	case "icmp", "icmp6":
		t, c := p.ICMPType, p.ICMPCode
		f.ICMPType, f.ICMPCode = &t, &c
	}
	return f
}

// TCPFlagString names TCP flag bits as tcpdump's letters, FIN first ("SA").
func TCPFlagString(f uint8) string {
	var b []byte
	for i := range 8 {
		if f&(1<<i) != 0 {
			b = append(b, tcpFlagNames[i])
		}
	}
	return string(b)
}

// tcpFlagNames are tcpdump's letters of the TCP flag bits, FIN first.
const tcpFlagNames = "FSRPAUEC"

// WireLen is the packet's length from its network header: the IP
// header's own length field where the captured bytes start with one,
// else the observer's length (skb->len), never less than what was
// captured.
func WireLen(e *Event) int {
	d := e.Data
	if e.MACHeader {
		if len(d) < 14 {
			return max(int(e.Len), len(d))
		}
		d = d[14:]
	}
	switch {
	case e.EtherType == 0x0800 && len(d) >= 4 && d[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(d[2:4]))
	case e.EtherType == 0x86dd && len(d) >= 6 && d[0]>>4 == 6:
		return 40 + int(binary.BigEndian.Uint16(d[4:6]))
	}
	return max(int(e.Len), len(d))
}

// NewFateLine returns the line of one fate record.
func NewFateLine(r *FateRecord) FateLine {
	e := r.Event
	l := FateLine{Type: LineFate, ID: r.ID, Time: Time{e.Time.UTC()}, Verdict: r.Verdict.String(),
		WhereFields: whereOf(e), PacketFields: packetOf(e), Late: r.Late, Conflicts: r.Conflicts}
	for _, o := range r.Observers {
		ol := ObserverLine{Status: o.Status.String()}
		if o.Status == StatusBlind {
			ol.Why = o.Why
		}
		if o.Status == StatusSaw {
			ol.Reason, ol.Location = o.Sighting.Reason, o.Sighting.Location
		}
		l.Observers = append(l.Observers, NamedObserver{Name: o.Name, ObserverLine: ol})
	}
	return l
}

// NewSummaryLine returns the line of a summary.
func NewSummaryLine(s *Summary) SummaryLine {
	l := SummaryLine{Type: LineSummary, Schema: SchemaVersion, Start: Time{s.Start.UTC()}, End: Time{s.End.UTC()},
		Events: s.Events, Drops: s.Drops, Consumed: s.Consumed,
		ByReason: Sorted(s.ByReason), ByLocation: Sorted(s.ByLocation), ByHook: Sorted(s.ByHook),
		Lost: append([]Loss{}, s.Lost...), Unknown: s.UnknownReasons(), Notes: s.Notes, Sources: []SourceLine{}}
	switch s.Completeness() {
	case Complete:
		t := true
		l.Complete = &t
	case Incomplete:
		f := false
		l.Complete = &f
	}
	if len(s.Ignored) > 0 {
		l.Ignored = Sorted(s.Ignored)
	}
	if c := s.Correlation; c != nil {
		fates, late, forced := s.Fates, c.Late, c.Forced
		l.Fates, l.Late, l.Forced = &fates, &late, &forced
		l.Verdicts = Sorted(c.ByVerdict)
		if len(c.LostBy) > 0 {
			l.LostBy = Sorted(c.LostBy)
		}
		l.Agreement = []PairLine{}
		for _, p := range c.Pairs {
			l.Agreement = append(l.Agreement, PairLine{Observers: [2]string{p.A, p.B}, BothSaw: p.BothSaw, Conflicts: p.Conflicts})
		}
	}
	for _, src := range s.Sources {
		l.Sources = append(l.Sources, SourceLine{Name: src.Name, Running: src.Running, Reason: src.Reason})
	}
	return l
}

// Summary returns the summary the line describes.
func (l *SummaryLine) Summary() *Summary {
	s := NewSummary()
	s.Start, s.End, s.Events, s.Drops, s.Consumed = l.Start.Time, l.End.Time, l.Events, l.Drops, l.Consumed
	s.ByReason, s.ByLocation, s.ByHook = l.ByReason.Map(), l.ByLocation.Map(), l.ByHook.Map()
	s.Lost = append(s.Lost, l.Lost...)
	// What made completeness unknown besides the counters is kept.
	for _, u := range l.Unknown {
		if !unknownOfCounter(u, l.Lost) {
			s.Unknowns = append(s.Unknowns, u)
		}
	}
	if l.Complete == nil && s.Completeness() == Complete {
		// The writer did not know, for a reason this version cannot tell.
		s.Unknowns = append(s.Unknowns, "the summary says completeness is unknown")
	}
	s.Notes = l.Notes
	for k, v := range l.Ignored.Map() {
		s.Ignored[k] = v
	}
	if l.Fates != nil {
		s.Fates = *l.Fates
		c := &Correlation{ByVerdict: l.Verdicts.Map()}
		if len(l.LostBy) > 0 {
			c.LostBy = l.LostBy.Map()
		}
		if l.Late != nil {
			c.Late = *l.Late
		}
		if l.Forced != nil {
			c.Forced = *l.Forced
		}
		for _, p := range l.Agreement {
			c.Pairs = append(c.Pairs, PairAgreement{A: p.Observers[0], B: p.Observers[1], BothSaw: p.BothSaw, Conflicts: p.Conflicts})
		}
		for _, src := range l.Sources {
			if src.Running {
				c.Observers = append(c.Observers, src.Name)
			}
		}
		s.Correlation = c
	}
	for _, src := range l.Sources {
		s.Sources = append(s.Sources, SourceStatus{Name: src.Name, Running: src.Running, Reason: src.Reason})
	}
	return s
}

func unknownOfCounter(u string, lost []Loss) bool {
	for _, l := range lost {
		if l.Unknown != "" && u == l.Key()+": "+l.Unknown {
			return true
		}
	}
	return false
}

// ParseAddr is netip.ParseAddr for the src and dst fields ("" is the
// zero Addr).
func ParseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}
