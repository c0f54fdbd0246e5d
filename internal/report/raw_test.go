package report

import (
	"bytes"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/internal/ringrec/ringrectest"
)

// rawCapture writes the record fixtures rounds times as trace
// --output-raw would, with h's filters, and a trailer when t is not nil.
func rawCapture(tb testing.TB, h ringrec.RawHeader, rounds int, extra [][]byte, t *ringrec.RawTrailer) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w := ringrectest.WriteRaw(tb, &buf, h, ringrectest.Fixtures(tb), rounds)
	for _, r := range extra {
		w.Record(r)
	}
	if t != nil {
		if err := w.Close(*t); err != nil {
			tb.Fatal(err)
		}
	} else if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func lossValue(s *fate.Summary, key string) (uint64, bool) {
	for _, l := range s.Lost {
		if l.Key() == key {
			return l.Value, true
		}
	}
	return 0, false
}

// TestReadRaw: a raw capture reports what the live trace would have: the
// records decoded, the trace's filters applied, the trailer's counters
// with the reader's own (undecodable records) added.
func TestReadRaw(t *testing.T) {
	start := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	trailer := &ringrec.RawTrailer{Start: start, End: start.Add(2 * time.Second),
		Lost:    []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full"}, {Observer: "ebpf", Name: "decode_errors"}},
		Ignored: map[string]uint64{"ebpf_not_packets": 2}, Sources: []fate.SourceStatus{{Name: "ebpf", Running: true}}}

	var listed []*fate.Event
	file := rawCapture(t, ringrec.RawHeader{}, 10, nil, trailer)
	res, err := ReadWith(bytes.NewReader(file), "raw", Options{Records: func(r Record) error {
		listed = append(listed, r.Event)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	if res.Format != "raw" || !res.HasSummary || res.Records != 30 || s.Events != 30 || s.Drops != 30 || s.Consumed != 0 || s.Ignored["copies_released"] != 10 ||
		s.ByReason["NO_SOCKET"] != 30 || s.Completeness() != fate.Complete || !s.Start.Equal(start) || s.Ignored["ebpf_not_packets"] != 2 {
		t.Fatalf("raw capture read as %s, %d records, summary %+v (completeness %s)", res.Format, res.Records, s, s.Completeness())
	}
	// The ICMP echo request's record is a copy released (the live pipeline
	// leaves those out too).
	if len(listed) != 30 || listed[0].Packet.Proto != "udp" || listed[0].Location != "__udp4_lib_rcv+0x4bc" || listed[0] == listed[1] {
		t.Errorf("listed %d events, the first %+v", len(listed), listed[0])
	}

	// The trace's filters: the expression on records the kernel did not
	// filter, the reasons on the rest.
	res, err = Read(bytes.NewReader(rawCapture(t, ringrec.RawHeader{Filter: "tcp or icmp"}, 10, nil, trailer)), "raw")
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Summary; s.Drops != 10 || s.ByLocation["tcp_v4_rcv+0x99"] != 10 {
		t.Errorf("filter tcp or icmp: %d drops by location %v, want 10 at tcp_v4_rcv", s.Drops, s.ByLocation)
	}
	if v, ok := lossValue(res.Summary, "ebpf_filter_no_bytes"); !ok || v != 0 {
		t.Errorf("filter_no_bytes %d (listed %v), want 0, listed", v, ok)
	}
	res, err = Read(bytes.NewReader(rawCapture(t, ringrec.RawHeader{FilterReasons: []string{"NO_SOCKET"}}, 10, nil, trailer)), "raw")
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Summary; s.Drops != 30 || s.Consumed != 0 {
		t.Errorf("reasons NO_SOCKET: %d drops, %d consumed, want 30 and 0", s.Drops, s.Consumed)
	}

	// A record that cannot be decoded is a loss the reader counts.
	bad := []byte{1, 2, 3}
	res, err = Read(bytes.NewReader(rawCapture(t, ringrec.RawHeader{}, 1, [][]byte{bad, bad}, trailer)), "raw")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := lossValue(res.Summary, "ebpf_decode_errors"); v != 2 || res.Summary.Completeness() != fate.Incomplete {
		t.Errorf("two undecodable records: decode_errors %d, %s; want 2, incomplete", v, res.Summary.Completeness())
	}

	// Killed before the trailer: what it holds is read, its losses unknown.
	res, err = Read(bytes.NewReader(rawCapture(t, ringrec.RawHeader{}, 5, nil, nil)), "raw")
	if err != nil {
		t.Fatal(err)
	}
	if res.HasSummary || res.Summary.Events != 15 || res.Summary.Completeness() != fate.CompletenessUnknown {
		t.Errorf("cut capture: summary %v, %d events, %s; want none, 15, unknown", res.HasSummary, res.Summary.Events, res.Summary.Completeness())
	}
}

func FuzzReadRaw(f *testing.F) {
	trailer := &ringrec.RawTrailer{Lost: []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full"}}}
	whole := rawCapture(f, ringrec.RawHeader{Filter: "udp"}, 2, nil, trailer)
	f.Add(whole)
	f.Add(whole[:len(whole)/2])
	f.Add(rawCapture(f, ringrec.RawHeader{}, 1, [][]byte{{1, 2, 3}}, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !bytes.HasPrefix(data, []byte(ringrec.RawMagic)) {
			data = append([]byte(ringrec.RawMagic), data...)
		}
		checkRead(t, data)
	})
}
