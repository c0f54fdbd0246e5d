package peers

import (
	"strings"
	"testing"
)

func TestParseToolsFile(t *testing.T) {
	tools, err := ParseTools(strings.NewReader(DefaultTools))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[Kind]int{}
	for _, tl := range tools {
		kinds[tl.Kind]++
	}
	// The brief's rows: baseline, perf, two bpftrace, dropwatch, four pktfate;
	// pktfate's raw capture, drops alone and with consumes; and NET_DM with
	// nobody reading (the kernel's own cost).
	if len(tools) != 12 || kinds[KindNetdmUnread] != 1 || kinds[KindPktfate] != 4 || kinds[KindPktfateRaw] != 2 || kinds[KindBaseline] != 1 || tools[0].Kind != KindBaseline {
		t.Errorf("tools.txt has %d tools, kinds %v", len(tools), kinds)
	}
	if got := strings.Join(tools[1].Args, " "); got != "-e skb:kfree_skb -a" {
		t.Errorf("perf args = %q", got)
	}
	for _, bad := range []string{
		"perf | perf | -a\n",                   // no baseline first
		"baseline | baseline\nx | strace | \n", // unknown kind
		"baseline | baseline\n | perf | -a\n",  // empty name
		"baseline\n",                           // no kind
	} {
		if _, err := ParseTools(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseTools(%q) accepted it", bad)
		}
	}
}

func TestSummarizePairsRoundsWithTheirBaseline(t *testing.T) {
	runs := []Run{
		{Tool: "baseline", Kind: KindBaseline, Round: 1, PPS: 100},
		{Tool: "perf", Kind: KindPerf, Round: 1, PPS: 90, NoPorts: 1000, Counts: Counts{Flood: 1000, Probe: 50}, ReadyProbeNS: 1.5e9, ReadyProbeOK: true},
		{Tool: "pktfate", Kind: KindPktfate, Round: 1, PPS: 70, NoPorts: 1000, Counts: Counts{Flood: 990}, Lost: 10, ReadyFileNS: 1.2e9, ReadyFileOK: true, ReadyProbeNS: 1.25e9, ReadyProbeOK: true},
		{Tool: "baseline", Kind: KindBaseline, Round: 2, PPS: 200},
		{Tool: "perf", Kind: KindPerf, Round: 2, PPS: 170, NoPorts: 2000, Counts: Counts{Flood: 2000}, ReadyProbeNS: 1.7e9, ReadyProbeOK: true},
		{Tool: "pktfate", Kind: KindPktfate, Round: 2, PPS: 150, NoPorts: 2000, Counts: Counts{Flood: 1000}, Err: "boom"},
	}
	rows := Summarize(runs)
	if len(rows) != 3 || rows[0].Tool != "baseline" || rows[1].Tool != "perf" || rows[2].Tool != "pktfate" {
		t.Fatalf("rows = %+v", rows)
	}
	// perf: 90/100 and 170/200 -> median 0.875; ready median of 1.5, 1.7.
	if p := rows[1]; p.PPSBase < 0.8749 || p.PPSBase > 0.8751 || p.Captured != 1 || !p.ReadyOK || p.Ready < 1.59 || p.Ready > 1.61 {
		t.Errorf("perf row = %+v", p)
	}
	// pktfate: ready from its ready file, not the probes; captured 99% and 50%.
	if p := rows[2]; p.Ready != 1.2 || p.ByProbe != 1.25 || p.Captured < 0.744 || p.Captured > 0.746 || len(p.Errors) != 1 || p.Lost != 5 {
		t.Errorf("pktfate row = %+v", p)
	}
	var b strings.Builder
	WriteTable(&b, []Kernel{{Release: "6.12.95", Rows: rows}, {Release: "6.1.0-50", Rows: rows}})
	for _, want := range []string{
		"| perf | 0.875 / 0.875 | 100.0% / 100.0% | 0 / 0 | 1.600 / 1.600 | 1.600 / 1.600 |",
		"| baseline | 1.000 / 1.000 | - / - | - / - | - / - | - / - |",
		"ERROR round 2: boom",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestReadyByProbes(t *testing.T) {
	sent := []uint64{1000, 2000, 3000, 4000, 5000}
	if d, ok := ReadyByProbes(sent, 2, 500); !ok || d != 3500 {
		t.Errorf("saw the last 2 probes: %d, %v; want 3500 ns after start", d, ok)
	}
	if d, ok := ReadyByProbes(sent, 5, 500); !ok || d != 500 {
		t.Errorf("saw every probe: %d, %v; want 500", d, ok)
	}
	if _, ok := ReadyByProbes(sent, 0, 500); ok {
		t.Error("saw no probe but reported ready")
	}
	if _, ok := ReadyByProbes(sent, 6, 500); ok {
		t.Error("saw more probes than sent but reported ready")
	}
}
