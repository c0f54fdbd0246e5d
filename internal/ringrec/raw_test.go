package ringrec_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/internal/ringrec/ringrectest"
)

func writeRaw(t *testing.T, fx []ringrectest.Fixture, times int, trailer bool) []byte {
	t.Helper()
	core, subsys := ringrectest.Reasons(fx).Table()
	var buf bytes.Buffer
	w, err := ringrec.NewRawWriter(&buf, ringrec.RawHeader{Pktfate: "test", Started: time.Unix(1e9, 0).UTC(), ClockOffset: 1e18, Reasons: core, Subsys: subsys})
	if err != nil {
		t.Fatal(err)
	}
	w.Symbols = ringrectest.Symbols(t)
	asked := 0
	w.Ifname = func(netns, ifindex uint32) string { asked++; return "eth-test" }
	for range times {
		for _, f := range fx {
			w.Record(f.Raw)
		}
	}
	if w.Records() != uint64(times*len(fx)) {
		t.Errorf("writer counted %d records, want %d", w.Records(), times*len(fx))
	}
	if trailer {
		if err := w.Close(ringrec.RawTrailer{Lost: []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full", Value: 7}}}); err != nil {
			t.Fatal(err)
		}
	} else if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRawRoundTrip: what the writer wrote decodes to what the live
// decoder makes of the same records, names and all, with the locations
// named once each and the records cut to their packet bytes.
func TestRawRoundTrip(t *testing.T) {
	fx := ringrectest.Fixtures(t)
	const times = 50
	file := writeRaw(t, fx, times, true)
	live := ringrec.NewDecoder(ringrectest.Reasons(fx), ringrectest.Symbols(t), ringrec.FixedClock(1e18))

	rr, err := ringrec.NewRawReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if rr.Header.Pktfate != "test" || rr.Header.Version != ringrec.RawVersion || rr.Header.EventSize != int(ringrec.EventSize) {
		t.Errorf("header %+v", rr.Header)
	}
	d := rr.Decoder()
	var got, want fate.Event
	n := 0
	for {
		raw, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", n, err)
		}
		f := fx[n%len(fx)]
		if len(raw) > len(f.Raw) {
			t.Fatalf("%s: %d bytes read back, %d recorded", f.Name, len(raw), len(f.Raw))
		}
		if err := d.Decode(raw, &got); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if err := live.Decode(f.Raw, &want); err != nil {
			t.Fatal(err)
		}
		if got.Location != f.Location || got.Reason != want.Reason || got.Fate.String() != f.Fate || got.Packet != want.Packet ||
			!got.Time.Equal(want.Time) || got.Ifname != want.Ifname || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("%s read back as %s %s at %s %+v, want %s %s at %s %+v", f.Name, got.Fate, got.Reason, got.Location, got.Packet,
				want.Fate, want.Reason, want.Location, want.Packet)
		}
		n++
	}
	if n != times*len(fx) || rr.Records() != uint64(n) {
		t.Errorf("%d records read back (reader counts %d), want %d", n, rr.Records(), times*len(fx))
	}
	if rr.Trailer == nil || rr.Trailer.Records != uint64(n) || len(rr.Trailer.Lost) != 1 || rr.Trailer.Lost[0].Value != 7 {
		t.Errorf("trailer %+v", rr.Trailer)
	}
	// The file holds each record's packet bytes, not the reserved snap
	// length, and each location's name once.
	var full int
	for _, f := range fx {
		full += len(f.Raw) + 4
	}
	if len(file) >= times*full {
		t.Errorf("file of %d bytes for %d records of %d bytes a round: not cut to the packet bytes", len(file), n, full)
	}
	for _, f := range fx {
		if c := bytes.Count(file, []byte(f.Location)); c != 1 {
			t.Errorf("location %s written %d times, want once", f.Location, c)
		}
	}
}

// TestRawCut: a file without its trailer (killed, or cut anywhere) gives
// its whole records and then ErrRawCut, never a wrong record.
func TestRawCut(t *testing.T) {
	fx := ringrectest.Fixtures(t)
	whole := writeRaw(t, fx, 3, false)
	for cut := len(ringrec.RawMagic) + 8; cut <= len(whole); cut += 37 {
		rr, err := ringrec.NewRawReader(bytes.NewReader(whole[:cut]))
		if err != nil {
			continue // cut inside the header
		}
		d := rr.Decoder()
		var ev fate.Event
		for {
			raw, err := rr.Next()
			if errors.Is(err, ringrec.ErrRawCut) {
				break
			}
			if err != nil {
				t.Fatalf("cut at %d: %v, want ErrRawCut", cut, err)
			}
			if err := d.Decode(raw, &ev); err != nil {
				t.Fatalf("cut at %d: a cut record was returned: %v", cut, err)
			}
		}
		if rr.Trailer != nil {
			t.Fatalf("cut at %d: a trailer", cut)
		}
	}
}

// TestRawRefuses: files that are not raw captures, or of another layout,
// are refused with a line that says so.
func TestRawRefuses(t *testing.T) {
	header := func(js string) []byte {
		b := binary.LittleEndian.AppendUint32([]byte(ringrec.RawMagic), 1<<28|uint32(len(js)))
		return append(b, js...)
	}
	other := header(fmt.Sprintf(`{"version":%d,"event_size":1}`, ringrec.RawVersion))
	newer := header(fmt.Sprintf(`{"version":9,"event_size":%d}`, ringrec.EventSize))
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"ndjson":     {[]byte(`{"type":"summary"}` + "\n"), "no PKTFRAW magic"},
		"empty":      {nil, "no PKTFRAW magic"},
		"layout":     {other, "records are 1"},
		"version":    {newer, "format version 9"},
		"no header":  {[]byte(ringrec.RawMagic), "header"},
		"bad header": {append([]byte(ringrec.RawMagic), 3, 0, 0, 0x10, '{', 'x', '}'), "header"},
	} {
		_, err := ringrec.NewRawReader(bytes.NewReader(c.b))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

// TestRawWriteError: a write that fails stops the writing for good and
// counts every record that was not written.
func TestRawWriteError(t *testing.T) {
	fx := ringrectest.Fixtures(t)
	w, err := ringrec.NewRawWriter(bufio.NewWriterSize(&failAfter{n: 3 << 20}, 1), ringrec.RawHeader{})
	if err != nil {
		t.Fatal(err)
	}
	const total = 40000
	for i := range total {
		w.Record(fx[i%len(fx)].Raw)
	}
	if w.Err() == nil || w.Unwritten() == 0 || w.Records()+w.Unwritten() != total {
		t.Errorf("after a full disk: err %v, %d written, %d unwritten, want an error and %d in all", w.Err(), w.Records(), w.Unwritten(), total)
	}
	if err := w.Close(ringrec.RawTrailer{}); err == nil {
		t.Error("Close after a write error returned nil")
	}
}

// BenchmarkRawRecord is the user-space cost of one record in a raw
// capture (trace --output-raw): on a one-CPU machine the sender pays it.
// The records are as the ring holds them, snap length reserved.
func BenchmarkRawRecord(b *testing.B) {
	fx := ringrectest.Fixtures(b)
	w, err := ringrec.NewRawWriter(io.Discard, ringrec.RawHeader{})
	if err != nil {
		b.Fatal(err)
	}
	w.Symbols = ringrectest.Symbols(b)
	recs := make([][]byte, len(fx))
	for i := range fx {
		recs[i] = make([]byte, ringrec.EventSize)
		copy(recs[i], fx[i].Raw)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.Record(recs[i%len(recs)])
		i++
	}
	if w.Records() != uint64(i) || w.Err() != nil {
		b.Fatalf("%d records written of %d: %v", w.Records(), i, w.Err())
	}
}
