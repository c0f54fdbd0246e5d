package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// progCost is what the kernel's BPF statistics (kernel.bpf_stats_enabled)
// say one program cost during a flood.
type progCost struct {
	name    string
	runs    uint64
	runtime time.Duration
}

// progIDs lists the BPF programs loaded now.
func progIDs() map[ebpf.ProgramID]bool {
	ids := map[ebpf.ProgramID]bool{}
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return ids
		}
		ids[next], id = true, next
	}
}

// progStats reads the run counters of the programs not in before (the
// ones pktfate loaded).
func progStats(before map[ebpf.ProgramID]bool) map[ebpf.ProgramID]progCost {
	out := map[ebpf.ProgramID]progCost{}
	for id := range progIDs() {
		if before[id] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, ierr := p.Info()
		st, serr := p.Stats()
		p.Close()
		if ierr != nil || serr != nil {
			continue
		}
		out[id] = progCost{name: info.Name, runs: st.RunCount, runtime: st.Runtime}
	}
	return out
}

// enableBPFStats turns the kernel's BPF run statistics on (they cost two
// clock reads per run, so only while measuring) and returns how to restore.
func enableBPFStats() (func(), error) {
	const knob = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(knob)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(knob, []byte("1"), 0o644); err != nil {
		return nil, err
	}
	return func() { os.WriteFile(knob, old, 0o644) }, nil
}

// costReport formats per-program ns/run and the total BPF time per packet
// sent, also as a share of the sender's time per packet without a tracer.
func costReport(from, to map[ebpf.ProgramID]progCost, sent uint64, baseRate float64) (string, error) {
	if sent == 0 {
		return "", errors.New("no packets sent")
	}
	var parts []string
	var total time.Duration
	for id, c := range to {
		d := c.runtime - from[id].runtime
		n := c.runs - from[id].runs
		total += d
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d runs %.0f ns/run", c.name, n, float64(d)/float64(n)))
		}
	}
	slices.Sort(parts)
	perPkt := float64(total) / float64(sent)
	return fmt.Sprintf("BPF: %s; %.0f ns per packet sent = %.1f%% of the sender's %.0f ns per packet without a tracer",
		strings.Join(parts, ", "), perPkt, 100*perPkt*baseRate/1e9, 1e9/baseRate), nil
}
