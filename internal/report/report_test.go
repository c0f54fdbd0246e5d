package report

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/fate"
)

// TestLateFateAndSummary: "late" is a flag in a fate line and a count in
// the summary; both read back without damage.
func TestLateFateAndSummary(t *testing.T) {
	const capture = `{"type":"event","time":"2026-11-27T04:10:00.123456789Z","source":"ebpf","fate":"drop","reason":"NO_SOCKET","location":"__udp4_lib_rcv+0x4bc"}
{"type":"fate","id":1,"time":"2026-11-27T04:10:00.123456789Z","verdict":"single","fate":"drop","reason":"NO_SOCKET","location":"__udp4_lib_rcv+0x4bc","observers":{"ebpf":{"status":"saw"},"dropmon":{"status":"missed"}},"late":true}
{"type":"summary","start":"2026-11-27T04:10:00Z","end":"2026-11-27T04:10:01Z","events":1,"drops":1,"consumed":0,"lost":{"ebpf_ringbuf_full":0},"late":1,"forced":0,"sources":[{"name":"ebpf","running":true},{"name":"dropmon","running":true}]}
`
	res := readCapture(t, capture)
	if len(res.Damage) != 0 || !res.HasSummary || res.Records != 2 {
		t.Fatalf("damage %v, summary %v, %d records", res.Damage, res.HasSummary, res.Records)
	}
	if c := res.Summary.Correlation; c == nil || c.Late != 1 {
		t.Errorf("correlation %+v, want late 1", c)
	}
}

// TestSummaryLateNotACount: a summary whose "late" is not a count is
// damage, named with its line, not a silent zero.
func TestSummaryLateNotACount(t *testing.T) {
	const capture = `{"type":"event","time":"2026-11-27T04:10:00.123456789Z","source":"ebpf","fate":"drop","reason":"NO_SOCKET","location":"__udp4_lib_rcv+0x4bc"}
{"type":"summary","start":"2026-11-27T04:10:00Z","end":"2026-11-27T04:10:01Z","events":1,"drops":1,"consumed":0,"lost":{"ebpf_ringbuf_full":0},"late":"x","forced":0,"sources":[{"name":"ebpf","running":true}]}
`
	res := readCapture(t, capture)
	if err := res.DamageError(); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `"late" is "x"`) {
		t.Fatalf("damage %v, want line 2 and its late named", res.Damage)
	}
}

// readCapture reads an NDJSON capture given as text.
func readCapture(t *testing.T, capture string) *Result {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cap.ndjson")
	if err := os.WriteFile(path, []byte(capture), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReadEarlierVersions reads captures written before the schema had a
// version (testdata/schema): the same summary as they carry.
func TestReadEarlierVersions(t *testing.T) {
	for _, f := range []string{"trace.ndjson", "capture.ndjson", "capture.pcapng"} {
		res, err := ReadFile(filepath.Join("../../testdata/schema/v0", f))
		if err != nil {
			t.Fatal(err)
		}
		s := res.Summary
		if len(res.Damage) != 0 || !res.HasSummary || res.Schema != 0 {
			t.Errorf("%s: damage %v, summary %v, schema %d", f, res.Damage, res.HasSummary, res.Schema)
		}
		want := []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full", Value: 12}, {Observer: "ebpf", Name: "decode_errors"}}
		if !slices.Equal(s.Lost, want) || s.Completeness() != fate.Incomplete {
			t.Errorf("%s: lost %v (%v), want %v, incomplete", f, s.Lost, s.Completeness(), want)
		}
		if s.Events != 12 || len(s.Sources) != 2 || s.Sources[1].Name != "dropmon" || s.Sources[1].Running {
			t.Errorf("%s: events %d, sources %+v", f, s.Events, s.Sources)
		}
		if f == "trace.ndjson" {
			if s.Drops != 9 || s.Consumed != 3 || s.ByHook["ipv6 LOCAL_IN"] != 1 || s.Correlation != nil {
				t.Errorf("%s: %+v", f, s)
			}
			continue
		}
		if c := s.Correlation; c == nil || s.Fates != 2 || c.ByVerdict["confirmed"] != 1 || c.ByVerdict["unconfirmed"] != 1 ||
			len(c.Pairs) != 1 || c.Pairs[0] != (fate.PairAgreement{A: "ebpf", B: "dropmon", BothSaw: 1}) {
			t.Errorf("%s: fates %d, correlation %+v", f, s.Fates, s.Correlation)
		}
	}
}
