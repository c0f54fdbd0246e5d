// Package report reads a capture pktfate wrote (NDJSON or pcapng) back
// into a summary, for `pktfate report`. A truncated or corrupt file is
// read up to the damage: the summary covers everything before it, and the
// error names the offset.
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
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pktfate/pktfate/fate"
)

// Result is what a capture file says.
type Result struct {
	Format string // "ndjson" or "pcapng"
	// Summary is rebuilt from the file's records; losses, sources and the
	// times come from the summary the capture wrote at its end.
	Summary *fate.Summary
	// Records counts the events and fate records read.
	Records int
	// HasSummary is false when the file ends before the capture's summary
	// (killed, or truncated): losses are then unknown.
	HasSummary bool
	// Damage describes where reading stopped early, or is nil.
	Damage error
}

// pcapngMagic is the block type of a pcapng section header.
var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// ReadFile reads a capture file. The error is for files that cannot be
// read at all; damage after a readable start is in Result.Damage.
func ReadFile(path string) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening capture: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(head) == 0 {
		return nil, fmt.Errorf("%s is empty: not a pktfate capture", path)
	}
	if bytes.Equal(head, pcapngMagic) {
		return readPcapng(br)
	}
	if head[0] != '{' {
		return nil, fmt.Errorf("%s is neither NDJSON nor pcapng written by pktfate (it starts with %q)", path, head)
	}
	return readNDJSON(br)
}

// builder accumulates a summary from records.
type builder struct {
	sum       *fate.Summary
	events    *fate.Summary // counts from events, used when there are no fates
	fates     bool
	observers map[string]bool
	verdicts  map[string]uint64
	pairs     map[[2]string]*fate.PairAgreement
}

func newBuilder() *builder {
	return &builder{sum: fate.NewSummary(), events: fate.NewSummary(), observers: map[string]bool{},
		verdicts: map[string]uint64{}, pairs: map[[2]string]*fate.PairAgreement{}}
}

func (b *builder) event(e *fate.Event) { b.events.Add(e) }

func (b *builder) fate(e *fate.Event, verdict string, saw []string) {
	b.fates = true
	b.sum.AddFate(e)
	b.verdicts[verdict]++
	order := func(o string) int { return slices.Index(fate.Observers, o) }
	for i, a := range saw {
		for _, c := range saw[i+1:] {
			x, y := a, c
			if order(x) > order(y) {
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
		s.Ignored = final.Ignored
	}
	if b.fates {
		for v := fate.VerdictSingle; v <= fate.VerdictUnconfirmed; v++ {
			b.verdicts[v.String()] += 0
		}
		c := &fate.Correlation{ByVerdict: b.verdicts}
		if final != nil && final.Correlation != nil {
			c.Observers, c.Late, c.Forced = final.Correlation.Observers, final.Correlation.Late, final.Correlation.Forced
		}
		for _, o := range fate.Observers {
			for _, o2 := range fate.Observers {
				if p := b.pairs[[2]string{o, o2}]; p != nil {
					c.Pairs = append(c.Pairs, *p)
				}
			}
		}
		s.Correlation = c
	}
	return s
}

// ndLine is the union of the NDJSON line types this reader needs.
type ndLine struct {
	Type      string                     `json:"type"`
	Time      time.Time                  `json:"time"`
	Source    string                     `json:"source"`
	Fate      string                     `json:"fate"`
	Reason    string                     `json:"reason"`
	Location  string                     `json:"location"`
	Hook      string                     `json:"hook"`
	Family    string                     `json:"family"`
	Verdict   string                     `json:"verdict"`
	Observers map[string]json.RawMessage `json:"observers"`

	// summary
	Start   time.Time         `json:"start"`
	End     time.Time         `json:"end"`
	Events  uint64            `json:"events"`
	Lost    map[string]uint64 `json:"lost"`
	Ignored map[string]uint64 `json:"ignored"`
	Sources []struct {
		Name    string `json:"name"`
		Running bool   `json:"running"`
		Reason  string `json:"reason"`
	} `json:"sources"`
	// Late is a count in the summary, a flag (true) in a fate line.
	Late   json.RawMessage `json:"late"`
	Forced uint64          `json:"forced"`
}

func parseFate(s string) fate.Fate {
	switch s {
	case "drop":
		return fate.FateDrop
	case "consume":
		return fate.FateConsume
	}
	return fate.FateUnknown
}

func readNDJSON(r *bufio.Reader) (*Result, error) {
	res := &Result{Format: "ndjson"}
	b := newBuilder()
	var final *fate.Summary
	var off int64
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			res.Damage = fmt.Errorf("reading at byte offset %d: %w", off, err)
			break
		}
		if !bytes.HasSuffix(line, []byte("\n")) {
			res.Damage = fmt.Errorf("line %d (byte offset %d) is cut short: the file is truncated", lineNo, off)
			break
		}
		var l ndLine
		if jerr := json.Unmarshal(line, &l); jerr != nil {
			res.Damage = fmt.Errorf("line %d (byte offset %d) is not valid JSON: %v", lineNo, off, jerr)
			break
		}
		off += int64(len(line))
		switch l.Type {
		case "event":
			res.Records++
			b.event(&fate.Event{Source: l.Source, Time: l.Time, Fate: parseFate(l.Fate), Reason: l.Reason, Location: l.Location, Hook: l.Hook, Family: l.Family})
		case "fate":
			res.Records++
			var saw []string
			for name, raw := range l.Observers {
				var o struct {
					Status string `json:"status"`
				}
				if json.Unmarshal(raw, &o) == nil && o.Status == fate.StatusSaw.String() {
					saw = append(saw, name)
				}
			}
			b.fate(&fate.Event{Time: l.Time, Fate: parseFate(l.Fate), Reason: l.Reason, Location: l.Location, Hook: l.Hook, Family: l.Family}, l.Verdict, saw)
		case "summary":
			res.HasSummary = true
			var err error
			if final, err = summaryOf(&l, line); err != nil {
				res.Damage = fmt.Errorf("line %d (byte offset %d), the summary, is damaged: %v", lineNo, off-int64(len(line)), err)
			}
		default:
			res.Damage = fmt.Errorf("line %d (byte offset %d) has unknown type %q", lineNo, off-int64(len(line)), l.Type)
		}
		if res.Damage != nil {
			break
		}
	}
	res.Summary = b.finish(final)
	return res, nil
}

// summaryOf turns a summary line into a Summary, keeping the loss counters
// in the order they were written.
func summaryOf(l *ndLine, raw []byte) (*fate.Summary, error) {
	s := fate.NewSummary()
	s.Start, s.End, s.Events = l.Start, l.End, l.Events
	for k, v := range l.Ignored {
		s.Ignored[k] = v
	}
	for _, name := range orderedKeys(raw, "lost") {
		s.Lost = append(s.Lost, fate.Counter{Name: name, Value: l.Lost[name]})
	}
	for _, src := range l.Sources {
		s.Sources = append(s.Sources, fate.SourceStatus{Name: src.Name, Running: src.Running, Reason: src.Reason})
	}
	var obs []string
	for _, src := range l.Sources {
		if src.Running {
			obs = append(obs, src.Name)
		}
	}
	var late uint64
	if len(l.Late) > 0 {
		if err := json.Unmarshal(l.Late, &late); err != nil {
			return s, fmt.Errorf("its \"late\" is %s, not a count", l.Late)
		}
	}
	s.Correlation = &fate.Correlation{Observers: obs, Late: late, Forced: l.Forced}
	return s, nil
}

// orderedKeys returns the keys of the object under key in their order in
// raw (encoding/json maps forget it).
func orderedKeys(raw []byte, key string) []string {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(top[key]))
	var keys []string
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return keys
		}
	}
	return keys
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

func readPcapng(r *bufio.Reader) (*Result, error) {
	res := &Result{Format: "pcapng"}
	cr := &countingReader{r: r}
	ng, err := pcapgo.NewNgReader(cr, pcapgo.NgReaderOptions{})
	if err != nil {
		return nil, fmt.Errorf("not a readable pcapng file: %w", err)
	}
	b := newBuilder()
	lastID := ^uint64(0)
	correlated := false
	for {
		start := cr.n
		_, ci, opts, err := ng.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			res.Damage = fmt.Errorf("pcapng block at about byte offset %d is damaged or cut short: %v", start, err)
			break
		}
		if len(opts.Comments) == 0 {
			continue
		}
		kv, ok := parseComment(opts.Comments[0])
		if !ok {
			continue
		}
		// Sightings of one packet share its packet id: count it once.
		if opts.PacketID != nil && *opts.PacketID == lastID {
			continue
		}
		if opts.PacketID != nil {
			lastID = *opts.PacketID
		}
		res.Records++
		e := &fate.Event{Time: ci.Timestamp, Fate: parseFate(kv["fate"]), Reason: kv["reason"], Location: kv["location"],
			Hook: kv["hook"], Family: kv["family"]}
		if v, ok := kv["verdict"]; ok {
			correlated = true
			b.fate(e, v, strings.Split(kv["observers"], "+"))
		}
		b.event(e)
	}
	var final *fate.Summary
	if n := ng.NInterfaces(); n > 0 {
		if ifc, err := ng.Interface(0); err == nil && strings.HasPrefix(ifc.Statistics.Comment, "{") {
			var l ndLine
			line := []byte(ifc.Statistics.Comment)
			if json.Unmarshal(line, &l) == nil && l.Type == "summary" {
				res.HasSummary = true
				var err error
				if final, err = summaryOf(&l, line); err != nil {
					res.Damage = fmt.Errorf("the summary in the first interface's comment is damaged: %v", err)
				}
			}
		}
	}
	if !correlated {
		b.fates = false
	}
	res.Summary = b.finish(final)
	return res, nil
}

// countingReader counts the bytes read through it, to name offsets.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
