package render

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
)

// rfc3339Nano is the contract's time format: UTC, always nine fraction digits.
var rfc3339Nano = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)

// TestNDJSONContract checks every line of the golden output against the
// schema (package fate): the fast writer must write exactly what
// encoding/json writes from the schema's type for the same event, key by
// key and value by value.
func TestNDJSONContract(t *testing.T) {
	var out bytes.Buffer
	renderAll(t, NewNDJSON(&out))
	events := goldenEvents()
	sum := goldenSummary(events)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(events)+1 {
		t.Fatalf("%d lines, want %d events and a summary", len(lines), len(events))
	}
	for i, e := range events {
		checkLine(t, lines[i], fate.NewEventLine(e), &fate.EventLine{})
		var ts struct{ Time string }
		if err := json.Unmarshal([]byte(lines[i]), &ts); err != nil || !rfc3339Nano.MatchString(ts.Time) {
			t.Errorf("line %d: time %q is not RFC 3339 UTC with nanoseconds", i+1, ts.Time)
		}
	}
	checkSummaryLine(t, lines[len(lines)-1], sum)
}

// checkLine compares a line the fast writer wrote with the schema's
// encoding of want: the same keys with the same values, and nothing the
// schema type does not define (into, decoded with DisallowUnknownFields).
func checkLine(t *testing.T, line string, want, into any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Errorf("line %s: not a schema line: %v", line, err)
		return
	}
	ref, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got, exp map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ref, &exp); err != nil {
		t.Fatal(err)
	}
	for k, v := range exp {
		if g, ok := got[k]; !ok {
			t.Errorf("line %s: key %q missing, want %v", line, k, v)
		} else if !reflect.DeepEqual(g, v) {
			t.Errorf("line %s: %s = %v, want %v", line, k, g, v)
		}
	}
	for k, v := range got {
		if _, ok := exp[k]; !ok {
			t.Errorf("line %s: key %q = %v, which the schema leaves out here", line, k, v)
		}
	}
}

// checkSummaryLine decodes the summary line into the schema's type and
// checks that it says what the summary says.
func checkSummaryLine(t *testing.T, line string, s *fate.Summary) {
	t.Helper()
	var m fate.SummaryLine
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("summary %q: %v", line, err)
	}
	if m.Type != "summary" || m.Schema != fate.SchemaVersion {
		t.Errorf("last line has type %q schema %d, want summary %d", m.Type, m.Schema, fate.SchemaVersion)
	}
	back := m.Summary()
	if !back.Start.Equal(s.Start) || !back.End.Equal(s.End) {
		t.Errorf("start %v end %v, want %v %v", back.Start, back.End, s.Start, s.End)
	}
	if back.Events != s.Events || back.Drops != s.Drops || back.Consumed != s.Consumed || back.Events != back.Drops+back.Consumed {
		t.Errorf("events %d drops %d consumed %d, want %d %d %d", back.Events, back.Drops, back.Consumed, s.Events, s.Drops, s.Consumed)
	}
	if !maps.Equal(back.ByReason, s.ByReason) || !maps.Equal(back.ByLocation, s.ByLocation) || !maps.Equal(back.ByHook, s.ByHook) || len(back.ByHook) == 0 {
		t.Errorf("tables %v %v %v, want %v %v %v", back.ByReason, back.ByLocation, back.ByHook, s.ByReason, s.ByLocation, s.ByHook)
	}
	if back.Completeness() != s.Completeness() || (m.Complete != nil) != (s.Completeness() != fate.CompletenessUnknown) {
		t.Errorf("complete %v, want %v", m.Complete, s.Completeness())
	}
	// Every loss counter is listed, also the zero ones, in order.
	if !slices.Equal(back.Lost, s.Lost) {
		t.Errorf("lost %v, want every counter of %v", back.Lost, s.Lost)
	}
	if !slices.Equal(back.Sources, s.Sources) {
		t.Errorf("sources %+v, want %+v", back.Sources, s.Sources)
	}
	// by_reason is ordered largest first, then by name.
	if i, j := strings.Index(line, `"NO_SOCKET":2`), strings.Index(line, `"ARP`); i < 0 || (j >= 0 && j < i) {
		t.Errorf("by_reason not sorted largest first: %s", line)
	}
}

// replaceInvalid replaces each byte that is not valid UTF-8 with U+FFFD,
// as encoding/json does.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":                  `""`,
		"lo":                `"lo"`,
		`v"e`:               `"v\"e"`,
		`a\b`:               `"a\\b"`,
		"\n\t\r\x00\x1f":    `"\n\t\u000d\u0000\u001f"`,
		"\xff":              `"\ufffd"`,
		"a\xffb\xfe":        `"a\ufffdb\ufffd"`,
		"é€😀":               `"é€😀"`,
		"\xe2\x82":          `"\ufffd\ufffd"`, // truncated 3-byte sequence
		"\x7f<>&":           "\"\x7f<>&\"",
		"\u2028\u2029":      "\"\u2028\u2029\"",
		"eth0\x00rest":      `"eth0\u0000rest"`,
		"\xed\xa0\x80surr":  `"\ufffd\ufffd\ufffdsurr"`, // UTF-16 surrogate: invalid in UTF-8
		"\xc0\xafoverlong/": `"\ufffd\ufffdoverlong/"`,
	} {
		got := string(appendString(nil, in))
		if got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
		checkJSONString(t, in, got)
	}
}

func checkJSONString(t *testing.T, in, enc string) {
	t.Helper()
	var back string
	if err := json.Unmarshal([]byte(enc), &back); err != nil {
		t.Fatalf("appendString(%q) = %s: not JSON: %v", in, enc, err)
	}
	if want := replaceInvalid(in); back != want {
		t.Fatalf("appendString(%q) = %s decodes to %q, want %q", in, enc, back, want)
	}
	// encoding/json agrees on the decoded value.
	std, _ := json.Marshal(in)
	var stdBack string
	if err := json.Unmarshal(std, &stdBack); err != nil || stdBack != back {
		t.Fatalf("encoding/json encodes %q to a different string: %q vs %q", in, stdBack, back)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "lo", "v\"\\\xff\xfe\x1bé", "\u2028", "\xed\xa0\x80", "eth0\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkJSONString(t, s, string(appendString([]byte("x"), s)[1:]))
	})
}

func TestAppendRFC3339(t *testing.T) {
	var c timeCache
	times := []time.Time{
		base,
		base.Add(time.Nanosecond),
		base.Add(time.Second), // next second: the cached prefix must change
		base,                  // and back
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 27, 6, 10, 0, 5, time.FixedZone("CET", 3600)), // converted to UTC
		time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC),          // before the epoch
		time.Date(10000, 1, 1, 0, 0, 1, 7, time.UTC),                      // no cache past year 9999
		base.Add(time.Second),
		{},
	}
	for _, tm := range times {
		got := string(c.appendRFC3339(nil, tm))
		want := tm.UTC().Format("2006-01-02T15:04:05.000000000Z")
		if got != want {
			t.Errorf("appendRFC3339(%v) = %s, want %s", tm, got, want)
		}
	}
}

func TestSummaryWithoutEvents(t *testing.T) {
	var out bytes.Buffer
	r := NewNDJSON(&out)
	s := fate.NewSummary()
	s.Start, s.End = base, base.Add(time.Second)
	if err := r.Summary(s); err != nil {
		t.Fatal(err)
	}
	want := `{"type":"summary","schema":1,"start":"2026-11-27T04:10:00.123456789Z","end":"2026-11-27T04:10:01.123456789Z","events":0,"drops":0,"consumed":0,"by_reason":{},"by_location":{},"by_hook":{},"lost":[],"complete":true,"sources":[]}` + "\n"
	if out.String() != want {
		t.Errorf("got  %s\nwant %s", out.String(), want)
	}
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestRenderWriteErrors(t *testing.T) {
	for name, r := range map[string]Renderer{"ndjson": NewNDJSON(errWriter{}), "text": NewText(errWriter{})} {
		e := goldenEvents()[0]
		var err error
		// Output is buffered: the error shows at the latest on Flush or Summary.
		for range 2000 {
			if err = r.Event(e); err != nil {
				break
			}
		}
		if err == nil {
			err = r.Flush()
		}
		if err == nil {
			t.Errorf("%s: no error from a failing writer", name)
		}
		if err := r.Summary(goldenSummary(nil)); err == nil {
			t.Errorf("%s: Summary to a failing writer: no error", name)
		}
	}
}

// Records and fixtures shared with package tracer's tests.
const (
	recordsDir       = "../../testdata/records"
	recordsKallsyms  = "../../testdata/kallsyms/6.18-records.txt"
	recordsBTF       = "../../testdata/btf/6.18.btf"
	recordsClockBase = int64(1_790_000_000_000_000_000)
)

// loadRecords reads the recorded ring-buffer records (testdata/records).
func loadRecords(tb testing.TB) [][]byte {
	tb.Helper()
	b, err := os.ReadFile(recordsDir + "/records.json")
	if err != nil {
		tb.Fatal(err)
	}
	var m struct {
		Records []struct{ File string }
	}
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, r := range m.Records {
		f, err := os.Open(recordsDir + "/" + r.File)
		if err != nil {
			tb.Fatal(err)
		}
		var raw []byte
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			h, err := hex.DecodeString(strings.Join(strings.Fields(line), ""))
			if err != nil {
				tb.Fatal(err)
			}
			raw = append(raw, h...)
		}
		f.Close()
		out = append(out, raw)
	}
	if len(out) == 0 {
		tb.Fatal("no records")
	}
	return out
}

func recordsDecoder(tb testing.TB) *tracer.Decoder {
	tb.Helper()
	spec, err := btf.LoadSpec(recordsBTF)
	if err != nil {
		tb.Fatal(err)
	}
	reasons, err := tracer.ReasonsFromBTF(spec)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.Open(recordsKallsyms)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	syms, err := tracer.ParseKallsyms(f)
	if err != nil {
		tb.Fatal(err)
	}
	return tracer.NewDecoder(reasons, syms, tracer.FixedClock(recordsClockBase))
}

// TestRecordsNDJSON renders the recorded records: the line of the UDP drop
// is fixed by the record and the fixtures.
func TestRecordsNDJSON(t *testing.T) {
	d := recordsDecoder(t)
	var out bytes.Buffer
	r := NewNDJSON(&out)
	for _, raw := range loadRecords(t) {
		var ev fate.Event
		if err := d.Decode(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if err := r.Event(&ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := `{"type":"event","time":"2026-09-21T14:46:04.779954352Z","source":"ebpf","fate":"drop","reason":"NO_SOCKET","location":"__udp4_lib_rcv+0x4bc","ifindex":1,"ifname":"lo","netns":4026532177,"mark":0,"len":35,"proto":"udp","src":"127.0.0.1","dst":"127.0.0.1","sport":38756,"dport":9,"payload_len":7,"skb_len":15,"cpu":0,"skb":"0xffff888106eb0c00"}`
	if !slices.Contains(lines, want) {
		t.Errorf("no line\n%s\nin\n%s", want, out.String())
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("invalid JSON: %s", l)
		}
	}
}

// BenchmarkDecodeRenderNDJSON is the hot path of `pktfate trace -o ndjson`:
// decode one ring-buffer record, render it as an NDJSON line.
func BenchmarkDecodeRenderNDJSON(b *testing.B) {
	recs := loadRecords(b)
	d := recordsDecoder(b)
	r := NewNDJSON(io.Discard)
	var ev fate.Event
	b.ReportAllocs()
	i := 0
	var cpu0 time.Duration
	for b.Loop() {
		if i == 0 {
			cpu0 = processCPUTime(b)
		}
		if err := d.Decode(recs[i%len(recs)], &ev); err != nil {
			b.Fatal(err)
		}
		if err := r.Event(&ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRates(b, i, processCPUTime(b)-cpu0)
}

// reportRates reports events per second of wall-clock time and per second
// of CPU time used by the process: on a shared machine the second one does
// not depend on what else runs (run with -cpu 1: with zero allocations the
// process's CPU time is the benchmark's).
func reportRates(b *testing.B, n int, cpu time.Duration) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	if cpu > 0 {
		b.ReportMetric(float64(n)/cpu.Seconds(), "events/cpu-s")
	}
}

func processCPUTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNDJSONEvent renders a decoded event only.
func BenchmarkNDJSONEvent(b *testing.B) {
	e := goldenEvents()[0]
	r := NewNDJSON(io.Discard)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Event(e); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkTextEvent renders a decoded event as a text line.
func BenchmarkTextEvent(b *testing.B) {
	e := goldenEvents()[0]
	r := NewText(io.Discard)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Event(e); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeRenderNDJSONStorm is the case the tool is built for: a
// drop storm, one recorded UDP closed-port record over and over with its
// timestamp and source port changing, as in the bench/udpflood run.
func BenchmarkDecodeRenderNDJSONStorm(b *testing.B) {
	rec := append([]byte(nil), loadRecords(b)[0]...)
	d := recordsDecoder(b)
	r := NewNDJSON(io.Discard)
	var ev fate.Event
	b.ReportAllocs()
	i := 0
	var cpu0 time.Duration
	for b.Loop() {
		if i == 0 {
			cpu0 = processCPUTime(b)
		}
		rec[0] = byte(i)               // timestamp
		rec[len(rec)-8] = byte(i >> 3) // somewhere in the payload
		if err := d.Decode(rec, &ev); err != nil {
			b.Fatal(err)
		}
		if err := r.Event(&ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRates(b, i, processCPUTime(b)-cpu0)
}

// TestAppendHex: the digits strconv gives, whether the fast path for
// sixteen-digit kernel addresses applies or not.
func TestAppendHex(t *testing.T) {
	for _, v := range []uint64{0, 0xa, 0x10, 0xffff888106837400, 0x0100000000000000, 0x1000000000000000,
		0x0fffffffffffffff, 0xffffffffffffffff, 0x7f} {
		if got, want := string(appendHex(nil, v)), strconv.FormatUint(v, 16); got != want {
			t.Errorf("appendHex(%#x) = %s, want %s", v, got, want)
		}
	}
}

// TestDecodeRenderAllocsNothing: decoding a ring-buffer record and
// rendering it as NDJSON, or a fate record as a fate line, allocate
// nothing once the caches are warm.
func TestDecodeRenderAllocsNothing(t *testing.T) {
	testutil.RequireNoRace(t)
	recs := loadRecords(t)
	d := recordsDecoder(t)
	r := NewNDJSON(io.Discard)
	var ev fate.Event
	i := 0
	event := func() {
		if err := d.Decode(recs[i%len(recs)], &ev); err != nil {
			t.Fatal(err)
		}
		if err := r.Event(&ev); err != nil {
			t.Fatal(err)
		}
		i++
	}
	for range 1000 {
		event()
	}
	if n := testutil.Mallocs(2000, event); n != 0 {
		t.Errorf("%d allocations for 2000 decoded and rendered events, want 0", n)
	}
	var recsOut []*fate.FateRecord
	fateRecords(t, func(f *fate.FateRecord) {
		c := *f
		c.Event = f.Event.Clone()
		c.Observers = append([]fate.ObserverReport(nil), f.Observers...)
		recsOut = append(recsOut, &c)
	})
	j := 0
	line := func() {
		if err := r.Fate(recsOut[j%len(recsOut)]); err != nil {
			t.Fatal(err)
		}
		j++
	}
	for range 1000 {
		line()
	}
	if n := testutil.Mallocs(2000, line); n != 0 {
		t.Errorf("%d allocations for 2000 fate lines, want 0", n)
	}
}
