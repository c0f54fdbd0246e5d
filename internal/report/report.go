// Package report reads a capture pktfate wrote back into a summary, for
// `pktfate report`: NDJSON (trace --output-json), pcapng (trace
// --output-pcapng) or a recording (trace --record, replayed through the
// correlator). Lines and blocks decode into the schema of package fate.
//
// Damage does not stop the reading: a line that cannot be read is counted
// and named (Result.Damage) and reading goes on past it; a file cut short
// is read up to the cut. What the damage leaves unknown is said in the
// summary (fate.Summary.Unknowns), never counted as zero.
package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
)

// Result is what a capture file says.
type Result struct {
	// Format is "ndjson", "pcapng", "recording" or "raw".
	Format string
	// Schema is the schema version of the file's summary (0 before
	// versions were written, -1 when there is no summary).
	Schema int
	// Summary is rebuilt from the file's records; losses, sources and the
	// times come from the summary the capture wrote at its end.
	Summary *fate.Summary
	// Records counts the events and fate records read.
	Records int
	// HasSummary is false when the file ends before the capture's summary
	// (killed, or truncated): losses are then unknown.
	HasSummary bool
	// Damage lists where the file could not be read; reading went on past
	// each one (but a cut end, which ends the file).
	Damage []Damage
}

// Damage is one place a capture could not be read.
type Damage struct {
	// Line is the NDJSON line number (0 in pcapng).
	Line int
	// Offset is the byte offset where it starts.
	Offset int64
	Why    string
}

func (d Damage) String() string {
	if d.Line > 0 {
		return fmt.Sprintf("line %d (byte offset %d): %s", d.Line, d.Offset, d.Why)
	}
	return fmt.Sprintf("byte offset %d: %s", d.Offset, d.Why)
}

// DamageError returns the damage as one error, or nil.
func (r *Result) DamageError() error {
	if len(r.Damage) == 0 {
		return nil
	}
	const show = 5
	var parts []string
	for i, d := range r.Damage {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(r.Damage)-show))
			break
		}
		parts = append(parts, d.String())
	}
	return fmt.Errorf("%d damaged places: %s", len(r.Damage), strings.Join(parts, "; "))
}

// pcapngMagic is the block type of a pcapng section header.
var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// Options say what else to do while reading.
type Options struct {
	// Records, when set, receives every event and fate record read, in
	// the file's order, with what the file holds of them: an NDJSON line
	// has the packet's fields but not its bytes; a pcapng packet and a
	// recording's event have the bytes too. An error it returns stops
	// the reading and is returned.
	Records func(Record) error
	// Home, when set, receives the network namespace the capture ran in,
	// before the first record, from a file that says it (a raw capture's
	// header); text output leaves that namespace unnamed, as the live
	// trace did.
	Home func(netns uint32)
}

// Record is one event or one packet's fate record of a capture.
type Record struct {
	// Event is the event, or the fate record's event.
	Event *fate.Event
	// Fate is the fate record (nil for an event).
	Fate *fate.FateRecord
}

// ReadFile reads a capture file ("-" is stdin). The error is for files
// that cannot be read at all; damage after a readable start is in
// Result.Damage.
func ReadFile(path string) (*Result, error) { return ReadFileWith(path, Options{}) }

// ReadFileWith is ReadFile with options.
func ReadFileWith(path string, opt Options) (*Result, error) {
	if path == "-" {
		return ReadWith(os.Stdin, "stdin", opt)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening capture: %w", err)
	}
	defer f.Close()
	return ReadWith(f, path, opt)
}

// Read reads a capture from r; name names it in errors.
func Read(r io.Reader, name string) (*Result, error) { return ReadWith(r, name, Options{}) }

// errStop wraps the error of Options.Records.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }
func (e errStop) Unwrap() error { return e.err }

// ReadWith is Read with options.
func ReadWith(r io.Reader, name string, opt Options) (*Result, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(ringrec.RawMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(head) == 0 {
		return nil, fmt.Errorf("%s is empty: not a pktfate capture", name)
	}
	var res *Result
	switch {
	case string(head) == ringrec.RawMagic:
		res, err = readRaw(br, opt)
	case bytes.HasPrefix(head, pcapngMagic):
		res, err = readPcapng(br, opt)
	case head[0] == '{':
		res, err = readLines(br, opt)
	default:
		return nil, fmt.Errorf("%s is neither NDJSON, pcapng nor a raw capture written by pktfate (it starts with %q)", name, head[:min(len(head), 4)])
	}
	if stop := (errStop{}); errors.As(err, &stop) {
		return nil, stop.err
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	res.noteUnknowns()
	return res, nil
}

// noteUnknowns says in the summary what the file leaves unknown.
func (r *Result) noteUnknowns() {
	s := r.Summary
	if !r.HasSummary {
		s.Unknowns = append(s.Unknowns, "the capture ends before its summary (it was killed, or the file was cut): losses are unknown")
	}
	if n := len(r.Damage); n > 0 {
		s.Unknowns = append(s.Unknowns, fmt.Sprintf("%d damaged places in the file: what they held is not counted", n))
	}
}

// builder accumulates a summary from records.
type builder struct {
	sum      *fate.Summary
	events   *fate.Summary // counts from events, used when there are no fates
	fates    bool
	verdicts map[string]uint64
	pairs    map[[2]string]*fate.PairAgreement
}

func newBuilder() *builder {
	return &builder{sum: fate.NewSummary(), events: fate.NewSummary(),
		verdicts: map[string]uint64{}, pairs: map[[2]string]*fate.PairAgreement{}}
}

func (b *builder) event(e *fate.Event) { b.events.Add(e) }

// observerRank orders observers as reports list them.
func observerRank(o string) int {
	if i := slices.Index(fate.Observers, o); i >= 0 {
		return i
	}
	return len(fate.Observers)
}

func (b *builder) fate(e *fate.Event, verdict string, saw []string) {
	b.fates = true
	b.sum.AddFate(e)
	b.verdicts[verdict]++
	for i, x := range saw {
		for _, y := range saw[i+1:] {
			if observerRank(x) > observerRank(y) || (observerRank(x) == observerRank(y) && x > y) {
				x, y = y, x
			}
			p := b.pairs[[2]string{x, y}]
			if p == nil {
				p = &fate.PairAgreement{A: x, B: y}
				b.pairs[[2]string{x, y}] = p
			}
			p.BothSaw++
			if verdict == fate.VerdictConflict.String() {
				p.Conflicts++
			}
		}
	}
}

// finish combines the records' counts with the capture's own summary.
func (b *builder) finish(final *fate.Summary) *fate.Summary {
	s := b.sum
	if !b.fates {
		s = b.events
	} else {
		s.Events = b.events.Events
	}
	if final != nil {
		s.Start, s.End, s.Lost, s.Sources, s.Events = final.Start, final.End, final.Lost, final.Sources, final.Events
		s.Ignored, s.Unknowns, s.Notes = final.Ignored, final.Unknowns, final.Notes
	}
	if b.fates {
		for v := fate.VerdictSingle; v <= fate.VerdictUnconfirmed; v++ {
			b.verdicts[v.String()] += 0
		}
		c := &fate.Correlation{ByVerdict: b.verdicts}
		if final != nil && final.Correlation != nil {
			c.Observers, c.Late, c.Forced = final.Correlation.Observers, final.Correlation.Late, final.Correlation.Forced
		}
		keys := make([][2]string, 0, len(b.pairs))
		for k := range b.pairs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(x, y [2]string) int {
			for i := range 2 {
				if d := observerRank(x[i]) - observerRank(y[i]); d != 0 {
					return d
				}
				if c := strings.Compare(x[i], y[i]); c != 0 {
					return c
				}
			}
			return 0
		})
		for _, k := range keys {
			c.Pairs = append(c.Pairs, *b.pairs[k])
		}
		s.Correlation = c
	}
	return s
}

// lineHead is what every line says of itself.
type lineHead struct {
	Type   string `json:"type"`
	Op     string `json:"op"` // recordings
	Schema *int   `json:"schema"`
}

// readLines reads NDJSON, or a recording when the first line is one.
func readLines(r *bufio.Reader, opt Options) (*Result, error) {
	first, _ := r.Peek(min(r.Buffered(), 4096))
	var h lineHead
	if line, _, _ := bytes.Cut(first, []byte("\n")); json.Unmarshal(line, &h) == nil && h.Op != "" {
		return readRecording(r, opt)
	}
	res := &Result{Format: "ndjson", Schema: -1}
	b := newBuilder()
	var final *fate.Summary
	var off int64
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			break
		}
		start := off
		off += int64(len(line))
		damage := func(why string) { res.Damage = append(res.Damage, Damage{Line: lineNo, Offset: start, Why: why}) }
		if err != nil && !errors.Is(err, io.EOF) {
			damage(err.Error())
			break
		}
		if !bytes.HasSuffix(line, []byte("\n")) {
			damage("cut short: the file is truncated")
			break
		}
		why, err := readLine(res, b, &final, line, opt)
		if err != nil {
			return nil, errStop{err}
		}
		if why != "" {
			damage(why)
		}
	}
	res.Summary = b.finish(final)
	return res, nil
}

// readLine reads one NDJSON line into the builder; it returns what is
// wrong with the line, or "", and the error of opt.Records.
func readLine(res *Result, b *builder, final **fate.Summary, line []byte, opt Options) (string, error) {
	var h lineHead
	if err := json.Unmarshal(line, &h); err != nil {
		return "not valid JSON: " + err.Error(), nil
	}
	switch h.Type {
	case fate.LineEvent:
		var l fate.EventLine
		if err := json.Unmarshal(line, &l); err != nil {
			return "not an event line: " + err.Error(), nil
		}
		e, err := eventOf(&l, line)
		if err != nil {
			return err.Error(), nil
		}
		res.Records++
		b.event(e)
		if opt.Records != nil {
			return "", opt.Records(Record{Event: e})
		}
	case fate.LineFate:
		var l fate.FateLine
		if err := json.Unmarshal(line, &l); err != nil {
			return "not a fate line: " + err.Error(), nil
		}
		r, err := fateOf(&l)
		if err != nil {
			return err.Error(), nil
		}
		res.Records++
		b.fate(r.Event, l.Verdict, r.Confirmations())
		if opt.Records != nil {
			return "", opt.Records(Record{Event: r.Event, Fate: r})
		}
	case fate.LineSummary:
		if res.HasSummary {
			return "a second summary line", nil
		}
		s, schema, err := summaryOf(line, h.Schema)
		if err != nil {
			return "the summary is damaged: " + err.Error(), nil
		}
		res.HasSummary, res.Schema, *final = true, schema, s
	default:
		return fmt.Sprintf("unknown line type %q", h.Type), nil
	}
	return "", nil
}

// fateOf reads a fate line into a record as trace rendered it.
func fateOf(l *fate.FateLine) (*fate.FateRecord, error) {
	el := fate.EventLine{Type: fate.LineEvent, Time: l.Time, WhereFields: l.WhereFields, PacketFields: l.PacketFields}
	e, err := el.Event()
	if err != nil {
		return nil, err
	}
	r := &fate.FateRecord{ID: l.ID, Event: e, Late: l.Late, Conflicts: l.Conflicts}
	if r.Verdict, err = parseVerdict(l.Verdict); err != nil {
		return nil, err
	}
	for _, o := range l.Observers {
		st, err := parseStatus(o.Status)
		if err != nil {
			return nil, fmt.Errorf("observer %s: %w", o.Name, err)
		}
		rep := fate.ObserverReport{Name: o.Name, Status: st, Why: o.Why}
		if st == fate.StatusSaw {
			rep.Sighting = fate.Sighting{Observer: o.Name, Fate: e.Fate, Reason: o.Reason, Location: o.Location}
			if e.Source == "" {
				e.Source = o.Name
			}
		}
		r.Observers = append(r.Observers, rep)
	}
	return r, nil
}

func parseVerdict(s string) (fate.Verdict, error) {
	for v := fate.VerdictSingle; v <= fate.VerdictUnconfirmed; v++ {
		if v.String() == s {
			return v, nil
		}
	}
	return 0, fmt.Errorf("unknown verdict %q", s)
}

func parseStatus(s string) (fate.ObserverStatus, error) {
	for st := fate.StatusNotRunning; st <= fate.StatusMissed; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown status %q", s)
}

// eventOf reads an event line; a version 0 line names the netfilter
// verdict "verdict".
func eventOf(l *fate.EventLine, line []byte) (*fate.Event, error) {
	e, err := l.Event()
	if err != nil {
		return nil, err
	}
	if e.Hook != "" && e.Verdict == "" {
		var v0 struct {
			Verdict string `json:"verdict"`
		}
		if json.Unmarshal(line, &v0) == nil {
			e.Verdict = v0.Verdict
		}
	}
	return e, nil
}

// summaryOf reads a summary line of any schema version.
func summaryOf(line []byte, schema *int) (*fate.Summary, int, error) {
	if schema == nil {
		s, err := summaryV0(line)
		return s, 0, err
	}
	if *schema > fate.SchemaVersion {
		return nil, *schema, fmt.Errorf("schema version %d is newer than this pktfate reads (%d): update pktfate", *schema, fate.SchemaVersion)
	}
	var l fate.SummaryLine
	if err := json.Unmarshal(line, &l); err != nil {
		return nil, *schema, err
	}
	return l.Summary(), *schema, nil
}

// summaryV0 reads a summary written before the schema had a version: its
// "lost" is an object of "<observer>_<counter>" keys and "complete" a
// plain boolean.
func summaryV0(line []byte) (*fate.Summary, error) {
	var l struct {
		fate.SummaryLine
		Lost fate.Counts     `json:"lost"`
		Late json.RawMessage `json:"late"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return nil, err
	}
	var late uint64
	if len(l.Late) > 0 {
		if err := json.Unmarshal(l.Late, &late); err != nil {
			return nil, fmt.Errorf("its \"late\" is %s, not a count", l.Late)
		}
	}
	l.SummaryLine.Late = &late
	s := l.SummaryLine.Summary()
	s.Lost = nil
	for _, c := range l.Lost {
		s.Lost = append(s.Lost, legacyLoss(c))
	}
	if s.Correlation == nil {
		// Version 0 wrote late and forced whenever it correlated, and
		// no fates count.
		c := &fate.Correlation{Late: late}
		if l.Forced != nil {
			c.Forced = *l.Forced
		}
		for _, src := range s.Sources {
			if src.Running {
				c.Observers = append(c.Observers, src.Name)
			}
		}
		s.Correlation = c
	}
	return s, nil
}

// legacyLoss splits a version 0 counter name ("dropmon_queue_full").
func legacyLoss(c fate.Counter) fate.Loss {
	for _, o := range fate.Observers {
		if name, ok := strings.CutPrefix(c.Name, o+"_"); ok {
			return fate.Loss{Observer: o, Name: name, Value: c.Value}
		}
	}
	o, name, _ := strings.Cut(c.Name, "_")
	return fate.Loss{Observer: o, Name: name, Value: c.Value}
}

// readRecording replays a recording (trace --record) through the
// correlator and reports its fate records.
func readRecording(r io.Reader, opt Options) (*Result, error) {
	rec, err := fate.ReadRecording(r)
	res := &Result{Format: "recording", Schema: -1}
	if err != nil {
		if rec == nil || len(rec.Steps) == 0 {
			return nil, fmt.Errorf("not a readable recording: %w", err)
		}
		res.Damage = append(res.Damage, Damage{Why: err.Error()})
	}
	b := newBuilder()
	var stop error
	c := fate.NewCorrelator(rec.Config(), func(f *fate.FateRecord) {
		res.Records++
		b.fate(f.Event, f.Verdict.String(), f.Confirmations())
		if opt.Records != nil && stop == nil {
			stop = opt.Records(Record{Event: f.Event, Fate: f})
		}
	})
	events := 0
	for _, s := range rec.Steps {
		if s.Op == fate.StepEvent {
			events++
		}
	}
	rec.Replay(c)
	c.Flush()
	if stop != nil {
		return nil, errStop{stop}
	}
	b.events.Events = uint64(events)
	b.fates = true // a recording correlates, with or without records
	st := c.Stats()
	b.fates = true // a correlation, even of nothing
	res.Summary = b.finish(nil)
	res.Summary.Correlation.Observers, res.Summary.Correlation.Late, res.Summary.Correlation.Forced = st.Observers, st.Late, st.Forced
	for _, o := range rec.Running {
		res.Summary.Sources = append(res.Summary.Sources, fate.SourceStatus{Name: o, Running: true})
	}
	// A recording keeps the loss intervals, not the counters: the
	// capture's summary has them.
	res.Summary.Unknowns = append(res.Summary.Unknowns, "a recording holds the correlator's input, not the loss counters: read the capture's own output for them")
	res.HasSummary = true
	return res, nil
}

// parseComment reads the key=value pairs of a pktfate packet comment.
func parseComment(c string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(c, "pktfate:")
	if !ok {
		return nil, false
	}
	kv := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return kv, false
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return kv, false
			}
			uq, _ := strconv.Unquote(q)
			kv[k], rest = uq, v[len(q):]
			continue
		}
		val, after, _ := strings.Cut(v, " ")
		kv[k], rest = val, after
	}
	return kv, true
}
