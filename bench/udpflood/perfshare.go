package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// perfShare is -perf: sample the sender's CPU with perf during each flood
// and measure which share of its time went where. A share is a ratio
// within one flood, so it does not move with the machine's speed, which
// swings by 10-20% between floods here (other tenants of the host).
var perfShare bool

// shares is the fraction of the sender CPU's samples with these functions
// on the stack (perf report --children).
type shares struct {
	hooks float64 // nf_hook_slow: netfilter hooks (only pktfate's, without -ruleset)
	tps   float64 // bpf_trace_run*: BPF programs on tracepoints (kfree_skb, consume_skb)
}

// startPerf samples cpu for d; wait returns the shares.
func startPerf(cpu int, d time.Duration) (wait func() (shares, error), err error) {
	dir, err := os.MkdirTemp("", "udpflood-perf-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "perf.data")
	rec := exec.Command("perf", "record", "-q", "-g", "-C", strconv.Itoa(cpu), "-o", data,
		"--", "sleep", strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
	var stderr bytes.Buffer
	rec.Stderr = &stderr
	if err := rec.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("-perf needs perf (apt-get install linux-perf): %w", err)
	}
	return func() (shares, error) {
		defer os.RemoveAll(dir)
		if err := rec.Wait(); err != nil {
			return shares{}, fmt.Errorf("perf record: %v: %s", err, stderr.Bytes())
		}
		out, err := exec.Command("perf", "report", "-i", data, "--children", "--sort", "sym",
			"--stdio", "-g", "none").Output()
		if err != nil {
			return shares{}, fmt.Errorf("perf report: %w", err)
		}
		return parseShares(out), nil
	}, nil
}

// parseShares reads perf report's "children% self% [k] symbol" lines.
func parseShares(report []byte) shares {
	var s shares
	sc := bufio.NewScanner(bytes.NewReader(report))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		switch sym := f[len(f)-1]; {
		case sym == "nf_hook_slow":
			s.hooks += v / 100
		case strings.HasPrefix(sym, "bpf_trace_run"):
			s.tps += v / 100
		}
	}
	return s
}
