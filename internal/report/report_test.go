package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
