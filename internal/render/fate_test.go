package render

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
)

// fateRecords joins an ebpf and a dropmon sighting of one packet and a
// lone ebpf sighting of another, through the real correlator.
func fateRecords(t *testing.T, render func(*fate.FateRecord)) fate.CorrelatorStats {
	t.Helper()
	evs := goldenEvents()
	c := fate.NewCorrelator(fate.CorrelatorConfig{Running: []string{"ebpf", "dropmon"}}, render)
	a := evs[0] // ebpf, UDP to a closed port: give it its headers
	a.Data = []byte{0x45, 0, 0, 35, 0, 1, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
		0xa3, 0x38, 0, 9, 0, 15, 0, 0}
	a.HadMAC = true
	b := *a
	b.Source, b.Skb, b.Mono = "dropmon", 0, a.Mono+uint64(2*time.Millisecond)
	b.Data = append(make([]byte, 14), a.Data...)
	b.MACHeader = true
	c.Add(a)
	c.Add(&b)
	lone := *a
	lone.Mono += uint64(time.Second)
	lone.Skb++
	lone.Reason = "NOT_SPECIFIED"
	lone.HadMAC = true
	c.Add(&lone)
	c.Flush()
	return c.Stats()
}

func TestFateNDJSON(t *testing.T) {
	var out bytes.Buffer
	r := NewNDJSON(&out)
	st := fateRecords(t, func(f *fate.FateRecord) {
		if err := r.Fate(f); err != nil {
			t.Fatal(err)
		}
	})
	s := fate.NewSummary()
	s.SetCorrelation(st)
	if err := r.Summary(s); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	type obs struct {
		Status string `json:"status"`
		Why    string `json:"why"`
		Reason string `json:"reason"`
	}
	var f [2]struct {
		Type      string         `json:"type"`
		ID        uint64         `json:"id"`
		Verdict   string         `json:"verdict"`
		Fate      string         `json:"fate"`
		Reason    string         `json:"reason"`
		Dport     int            `json:"dport"`
		Observers map[string]obs `json:"observers"`
	}
	for i := range f {
		if err := json.Unmarshal([]byte(lines[i]), &f[i]); err != nil {
			t.Fatalf("line %q: %v", lines[i], err)
		}
	}
	if f[0].Type != "fate" || f[0].ID != 1 || f[0].Verdict != "confirmed" || f[0].Reason != "NO_SOCKET" ||
		f[0].Observers["ebpf"].Status != "saw" || f[0].Observers["dropmon"].Status != "saw" ||
		f[0].Observers["kmod"].Status != "not_running" || f[0].Observers["nf"].Status != "not_running" || f[0].Dport == 0 {
		t.Errorf("first fate: %+v", f[0])
	}
	if f[1].Verdict != "unconfirmed" || f[1].Observers["dropmon"].Status != "missed" {
		t.Errorf("second fate: %+v", f[1])
	}
	var sum struct {
		Verdicts  map[string]uint64 `json:"verdicts"`
		Agreement []struct {
			Observers []string `json:"observers"`
			BothSaw   uint64   `json:"both_saw"`
		} `json:"agreement"`
		Complete bool `json:"complete"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Verdicts["confirmed"] != 1 || sum.Verdicts["unconfirmed"] != 1 || len(sum.Agreement) != 1 ||
		sum.Agreement[0].BothSaw != 1 || strings.Join(sum.Agreement[0].Observers, "+") != "ebpf+dropmon" || !sum.Complete {
		t.Errorf("summary: %+v", sum)
	}
}

func TestFateText(t *testing.T) {
	var out bytes.Buffer
	r := NewText(&out)
	fateRecords(t, func(f *fate.FateRecord) {
		if err := r.Fate(f); err != nil {
			t.Fatal(err)
		}
	})
	r.Flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], "PACKET") {
		t.Fatalf("output:\n%s", out.String())
	}
	if !strings.HasSuffix(lines[1], " NO_SOCKET      __udp4_lib_rcv   lo@4026532246") {
		t.Errorf("confirmed line: %q", lines[1])
	}
	if !strings.HasSuffix(lines[2], "  unconfirmed: dropmon missed") {
		t.Errorf("unconfirmed line: %q", lines[2])
	}
	out.Reset()
	r = NewText(&out)
	r.Wide = true
	fateRecords(t, func(f *fate.FateRecord) {
		if err := r.Fate(f); err != nil {
			t.Fatal(err)
		}
	})
	r.Flush()
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "VERDICT") || !strings.HasSuffix(lines[0], "OBSERVERS") {
		t.Fatalf("wide output:\n%s", out.String())
	}
	if !strings.Contains(lines[1], " confirmed ") || !strings.HasSuffix(lines[1], " ebpf+dropmon") {
		t.Errorf("wide confirmed line: %q", lines[1])
	}
	if !strings.Contains(lines[2], " unconfirmed ") || !strings.HasSuffix(lines[2], " ebpf; dropmon missed") {
		t.Errorf("wide unconfirmed line: %q", lines[2])
	}
}

// TestFateLineContract: every fate line the fast writer writes is the
// schema's encoding of its record, key by key.
func TestFateLineContract(t *testing.T) {
	var n int
	fateRecords(t, func(f *fate.FateRecord) {
		var out bytes.Buffer
		r := NewNDJSON(&out)
		if err := r.Fate(f); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		checkLine(t, strings.TrimSpace(out.String()), fate.NewFateLine(f), &fate.FateLine{})
		n++
	})
	if n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}

// TestFateTextGolden: fate records as default and wide text lines.
func TestFateTextGolden(t *testing.T) {
	var out bytes.Buffer
	for _, wide := range []bool{false, true} {
		r := goldenText(&out, wide)
		fateRecords(t, func(f *fate.FateRecord) {
			if err := r.Fate(f); err != nil {
				t.Fatal(err)
			}
		})
		r.Flush()
		out.WriteString("\n")
	}
	checkGolden(t, "trace-fates.txt", out.Bytes())
}
