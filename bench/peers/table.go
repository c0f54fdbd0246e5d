package peers

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Row is one tool's figures on one kernel: medians over its rounds.
type Row struct {
	Tool      string
	Rounds    int
	PPSBase   float64 // sender's rate with the tool over without, paired per round
	Captured  float64 // the tool's flood drops over Udp NoPorts
	Lost      uint64
	Overruns  uint64
	LostHow   string
	Ready     float64 // virtual s: pktfate's --ready-file, the probes for the others
	ReadyOK   bool
	ByProbe   float64 // virtual s, from the probes, for every tool
	ByProbeOK bool
	Errors    []string
}

// Summarize turns one kernel's runs into rows, in the tools' order. Each
// round's rate is divided by the same round's baseline.
func Summarize(runs []Run) []Row {
	base := map[int]float64{}
	var order []string
	byTool := map[string][]Run{}
	for _, r := range runs {
		if r.Kind == KindBaseline {
			base[r.Round] = r.PPS
		}
		if _, ok := byTool[r.Tool]; !ok {
			order = append(order, r.Tool)
		}
		byTool[r.Tool] = append(byTool[r.Tool], r)
	}
	var rows []Row
	for _, name := range order {
		rs := byTool[name]
		row := Row{Tool: name, Rounds: len(rs), LostHow: rs[0].LostHow}
		var pps, capt, lost, overruns, ready, probe []float64
		for _, r := range rs {
			if r.Err != "" {
				row.Errors = append(row.Errors, fmt.Sprintf("round %d: %s", r.Round, r.Err))
			}
			if b := base[r.Round]; b > 0 && r.PPS > 0 {
				pps = append(pps, r.PPS/b)
			}
			if r.NoPorts > 0 {
				capt = append(capt, float64(r.Counts.Flood)/float64(r.NoPorts))
			}
			lost = append(lost, float64(r.Lost))
			overruns = append(overruns, float64(r.Overruns))
			if r.ReadyProbeOK {
				probe = append(probe, float64(r.ReadyProbeNS)/1e9)
			}
			switch {
			case r.Kind == KindPktfate && r.ReadyFileOK:
				ready = append(ready, float64(r.ReadyFileNS)/1e9)
			case r.Kind != KindPktfate && r.ReadyProbeOK:
				ready = append(ready, float64(r.ReadyProbeNS)/1e9)
			}
		}
		row.PPSBase = median(pps)
		row.Captured = median(capt)
		row.Lost = uint64(median(lost))
		row.Overruns = uint64(median(overruns))
		row.Ready, row.ReadyOK = median(ready), len(ready) > 0
		row.ByProbe, row.ByProbeOK = median(probe), len(probe) > 0
		rows = append(rows, row)
	}
	return rows
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Kernel is one kernel's rows for the table.
type Kernel struct {
	Release string
	Rows    []Row
}

// WriteTable prints one markdown table for the kernels side by side:
// each cell "a / b" in the kernels' order.
func WriteTable(w io.Writer, kernels []Kernel) {
	var rel []string
	for _, k := range kernels {
		rel = append(rel, k.Release)
	}
	rounds := 0
	if len(kernels) > 0 && len(kernels[0].Rows) > 0 {
		rounds = kernels[0].Rows[0].Rounds
	}
	fmt.Fprintf(w, "Kernels: %s (each cell: %s). Medians of %d rounds; virtual (guest) time.\n\n", strings.Join(rel, ", "), strings.Join(rel, " / "), rounds)
	fmt.Fprintln(w, "| tool | pps/base | captured vs NoPorts | loss it reports | ready (virtual s) | ready by probe (virtual s) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	if len(kernels) == 0 {
		return
	}
	for i, row := range kernels[0].Rows {
		cells := make([][]string, 5)
		for _, k := range kernels {
			if i >= len(k.Rows) || k.Rows[i].Tool != row.Tool {
				for c := range cells {
					cells[c] = append(cells[c], "?")
				}
				continue
			}
			r := k.Rows[i]
			cells[0] = append(cells[0], fmt.Sprintf("%.3f", r.PPSBase))
			if strings.HasPrefix(row.Tool, "baseline") {
				cells[1] = append(cells[1], "-")
				cells[2] = append(cells[2], "-")
			} else {
				cells[1] = append(cells[1], fmt.Sprintf("%.1f%%", 100*r.Captured))
				l := fmt.Sprint(r.Lost)
				if r.Overruns > 0 {
					l += fmt.Sprintf(" (+%d ENOBUFS)", r.Overruns)
				}
				cells[2] = append(cells[2], l)
			}
			cells[3] = append(cells[3], seconds(r.Ready, r.ReadyOK, row.Tool))
			cells[4] = append(cells[4], seconds(r.ByProbe, r.ByProbeOK, row.Tool))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", row.Tool,
			strings.Join(cells[0], " / "), strings.Join(cells[1], " / "), strings.Join(cells[2], " / "),
			strings.Join(cells[3], " / "), strings.Join(cells[4], " / "))
	}
	fmt.Fprintln(w)
	for _, k := range kernels {
		for _, r := range k.Rows {
			if r.LostHow != "" && !strings.HasPrefix(r.Tool, "baseline") {
				fmt.Fprintf(w, "- %s, %s: loss = %s\n", k.Release, r.Tool, r.LostHow)
			}
			for _, e := range r.Errors {
				fmt.Fprintf(w, "- %s, %s: ERROR %s\n", k.Release, r.Tool, e)
			}
		}
	}
}

func seconds(v float64, ok bool, tool string) string {
	if strings.HasPrefix(tool, "baseline") {
		return "-"
	}
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", v)
}
