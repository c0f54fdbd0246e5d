package peers

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Class is what a drop in a run was: one of the flood's datagrams (to the
// closed port 9: NO_SOCKET, in __udp4_lib_rcv), one of the probes (to a
// bound socket whose receive buffer is full: SOCKET_RCVBUFF), or anything
// else the kernel dropped meanwhile.
type Class int

const (
	Other Class = iota
	Flood
	Probe
)

// Classify tells the class of a drop from its reason name (without
// SKB_DROP_REASON_) or, when the tool reports none, from the function its
// location is in.
func Classify(reason, function string) Class {
	switch strings.TrimPrefix(reason, "SKB_DROP_REASON_") {
	case "NO_SOCKET":
		return Flood
	case "SOCKET_RCVBUFF":
		return Probe
	case "":
	default:
		return Other
	}
	switch {
	case function == "__udp4_lib_rcv":
		return Flood
	case strings.Contains(function, "udp_queue_rcv"), strings.Contains(function, "udp_enqueue"):
		return Probe
	}
	return Other
}

// Counts are a tool's drops by class.
type Counts struct {
	Flood, Probe, Other uint64
}

func (c *Counts) add(cl Class, n uint64) {
	switch cl {
	case Flood:
		c.Flood += n
	case Probe:
		c.Probe += n
	default:
		c.Other += n
	}
}

// Total is every drop the tool reported.
func (c Counts) Total() uint64 { return c.Flood + c.Probe + c.Other }

// SNMP is what a run reads from /proc/net/snmp's Udp line.
type SNMP struct {
	NoPorts, RcvbufErrors uint64
}

// ParseSNMP reads the Udp NoPorts and RcvbufErrors counters of
// /proc/net/snmp (a header line naming the fields, then a values line).
func ParseSNMP(data string) (SNMP, error) {
	var header []string
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		var s SNMP
		found := 0
		for i := 1; i < len(f) && i < len(header); i++ {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return SNMP{}, fmt.Errorf("parsing /proc/net/snmp Udp %s: %w", header[i], err)
			}
			switch header[i] {
			case "NoPorts":
				s.NoPorts, found = v, found+1
			case "RcvbufErrors":
				s.RcvbufErrors, found = v, found+1
			}
		}
		if found != 2 {
			return SNMP{}, fmt.Errorf("parsing /proc/net/snmp: Udp line lacks NoPorts or RcvbufErrors")
		}
		return s, nil
	}
	return SNMP{}, fmt.Errorf("parsing /proc/net/snmp: no Udp lines")
}

var symbolicRE = regexp.MustCompile(`\{\s*(\d+)\s*,\s*"(\w+)"\s*\}`)

// ParseReasonNames reads the drop reasons' numbers and names from the
// kfree_skb tracepoint's format file (__print_symbolic(REC->reason, {2,
// "NO_SOCKET"}, ...)): they differ between kernels.
func ParseReasonNames(format string) (map[int]string, error) {
	i := strings.Index(format, "__print_symbolic(REC->reason")
	if i < 0 {
		return nil, fmt.Errorf("parsing kfree_skb format: no __print_symbolic of the reason")
	}
	names := map[int]string{}
	for _, m := range symbolicRE.FindAllStringSubmatch(format[i:], -1) {
		n, _ := strconv.Atoi(m[1])
		names[n] = m[2]
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("parsing kfree_skb format: no reason names")
	}
	return names, nil
}

// locationFunc is the function of a "func+0x1a/0x2b" location.
func locationFunc(loc string) string {
	if i := strings.IndexAny(loc, "+ "); i >= 0 {
		return loc[:i]
	}
	return loc
}

// PerfScript counts the skb:kfree_skb samples that `perf script -F trace`
// prints, one a line: "skbaddr=0x... [rx_sk=0x...] protocol=2048
// location=__udp4_lib_rcv+0x5e2 reason: NO_SOCKET" (older perf prints the
// location as a bare address; the reason decides then).
func PerfScript(r io.Reader) (Counts, error) {
	var c Counts
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "skbaddr=") {
			continue
		}
		var reason, fn string
		if _, after, ok := strings.Cut(line, "reason: "); ok {
			reason = strings.Fields(after + " ")[0]
		}
		if _, after, ok := strings.Cut(line, "location="); ok {
			fn = locationFunc(strings.Fields(after + " ")[0])
		}
		c.add(Classify(reason, fn), 1)
	}
	return c, sc.Err()
}

var (
	perfSamplesRE = regexp.MustCompile(`\[ perf record: Captured and wrote [\d.]+ \w+ \S+ \((\d+) samples\) \]`)
	perfLostRE    = regexp.MustCompile(`(?:lost (\d+) chunks|LOST (\d+) events|(\d+) lost samples|Lost (\d+) samples)`)
)

// PerfRecord reads perf record's closing line, "[ perf record: Captured
// and wrote 4.2 MB perf.data (150123 samples) ]", and whatever loss perf
// reports in it or perf script's warnings ("Processed N events and lost M
// chunks!", "N lost samples").
func PerfRecord(output string) (samples uint64, lost uint64, err error) {
	m := perfSamplesRE.FindStringSubmatch(output)
	if m == nil {
		return 0, 0, fmt.Errorf("parsing perf record output: no \"Captured and wrote\" line")
	}
	samples, _ = strconv.ParseUint(m[1], 10, 64)
	for _, l := range perfLostRE.FindAllStringSubmatch(output, -1) {
		for _, g := range l[1:] {
			if g != "" {
				n, _ := strconv.ParseUint(g, 10, 64)
				lost += n
			}
		}
	}
	return samples, lost, nil
}

var (
	bpftraceMapRE  = regexp.MustCompile(`^@\w*\[([^\]]+)\]:\s*(\d+)\s*$`)
	bpftraceLostRE = regexp.MustCompile(`^Lost (\d+) events`)
)

// BpftraceMap reads what bpftrace prints at exit for a count() map keyed
// by the drop reason: "@[2]: 150000" (the reason as a number: names maps
// it) or "@[SKB_DROP_REASON_NO_SOCKET]: 150000", and any "Lost N events".
func BpftraceMap(r io.Reader, names map[int]string) (Counts, uint64, error) {
	var c Counts
	var lost uint64
	seen := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := bpftraceLostRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			lost += n
			continue
		}
		m := bpftraceMapRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseUint(m[2], 10, 64)
		c.add(Classify(reasonName(m[1], names), ""), n)
		seen = true
	}
	if err := sc.Err(); err != nil {
		return c, lost, err
	}
	if !seen {
		return c, lost, fmt.Errorf("parsing bpftrace output: no map entries")
	}
	return c, lost, nil
}

// reasonName turns a reason as a tool printed it (a number or a name)
// into its name.
func reasonName(s string, names map[int]string) string {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if name, ok := names[n]; ok {
			return name
		}
		return "reason-" + s
	}
	return strings.TrimPrefix(s, "SKB_DROP_REASON_")
}

// BpftracePrintf counts the lines of a bpftrace program that prints the
// reason of each drop as a number on a line of its own, and the "Lost N
// events" it reports when its perf buffer overflows.
func BpftracePrintf(r io.Reader, names map[int]string) (Counts, uint64, error) {
	var c Counts
	var lost uint64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := bpftraceLostRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			lost += n
			continue
		}
		if _, err := strconv.Atoi(line); err != nil {
			continue // "Attaching 1 probe..." and the like
		}
		c.add(Classify(reasonName(line, names), ""), 1)
	}
	return c, lost, sc.Err()
}

var tailDroppedRE = regexp.MustCompile(`Tail dropped: (\d+)`)

// DropwatchLoss is what dropwatch says it lost: the NET_DM queue's tail
// drops its stats command reports ("Tail dropped: N", alerts), and how
// often a netlink receive failed with ENOBUFS ("Receive operation failed::
// No buffer space available": the socket overran, an unknown number of
// alerts each time).
type DropwatchLoss struct {
	TailDropped, Overruns uint64
}

// Dropwatch counts the alerts dropwatch prints in packet mode, one block
// each starting "drop at: udp_queue_rcv_one_skb+0x409/0x570
// (0xffffffff...)", with a "drop reason: SOCKET_RCVBUFF" line on kernels
// whose NET_DM sends one, and what it reports lost.
func Dropwatch(r io.Reader) (Counts, DropwatchLoss, error) {
	var c Counts
	var lost DropwatchLoss
	var fn, reason string
	inAlert := false
	flush := func() {
		if inAlert {
			c.add(Classify(reason, fn), 1)
		}
		inAlert, fn, reason = false, "", ""
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "drop at: "):
			flush()
			inAlert = true
			fn = locationFunc(strings.TrimPrefix(line, "drop at: "))
		case strings.HasPrefix(line, "drop reason: "):
			reason = strings.TrimSpace(strings.TrimPrefix(line, "drop reason: "))
		case line == "":
			flush()
		case strings.Contains(line, "No buffer space available"):
			lost.Overruns++
		default:
			if m := tailDroppedRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				lost.TailDropped += n
			}
		}
	}
	flush()
	return c, lost, sc.Err()
}

// PktfateSummary is the part of pktfate's NDJSON summary the benchmark
// reads.
type PktfateSummary struct {
	Drops    uint64            `json:"drops"`
	ByReason map[string]uint64 `json:"by_reason"`
	// Lost is the ledger: an object of counters before schema 1, a list
	// of {observer, name, value} since.
	Lost json.RawMessage `json:"lost"`
}

// pktfateLost reads either form of the summary's lost counters.
func pktfateLost(raw json.RawMessage) (map[string]uint64, error) {
	out := map[string]uint64{}
	if len(raw) == 0 || string(raw) == "null" {
		return out, nil
	}
	if raw[0] == '{' {
		return out, json.Unmarshal(raw, &out)
	}
	var list []struct {
		Observer string `json:"observer"`
		Name     string `json:"name"`
		Value    uint64 `json:"value"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	for _, l := range list {
		out[l.Observer+"_"+l.Name] += l.Value
	}
	return out, nil
}

// Pktfate reads the summary line ("type":"summary") of pktfate's NDJSON
// output: its drops by reason, and every loss counter.
func Pktfate(r io.Reader) (Counts, map[string]uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var sum *PktfateSummary
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), `"summary"`) {
			continue
		}
		var probe struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(line, &probe) != nil || probe.Type != "summary" {
			continue
		}
		var s PktfateSummary
		if err := json.Unmarshal(line, &s); err != nil {
			return Counts{}, nil, fmt.Errorf("parsing pktfate summary: %w", err)
		}
		sum = &s
	}
	if err := sc.Err(); err != nil {
		return Counts{}, nil, err
	}
	if sum == nil {
		return Counts{}, nil, fmt.Errorf("parsing pktfate output: no summary line")
	}
	lost, err := pktfateLost(sum.Lost)
	if err != nil {
		return Counts{}, nil, fmt.Errorf("parsing pktfate summary's lost counters: %w", err)
	}
	var c Counts
	var byReason uint64
	for reason, n := range sum.ByReason {
		c.add(Classify(reason, ""), n)
		byReason += n
	}
	if byReason != sum.Drops {
		return c, lost, fmt.Errorf("parsing pktfate summary: by_reason adds up to %d, drops is %d", byReason, sum.Drops)
	}
	return c, lost, nil
}

// ParseProbeTimes reads the probe sender's send times (ns, one a line).
func ParseProbeTimes(data string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Fields(data) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parsing probe times: %w", err)
		}
		out = append(out, v)
	}
	if !sort.SliceIsSorted(out, func(i, j int) bool { return out[i] < out[j] }) {
		return nil, fmt.Errorf("parsing probe times: not in order")
	}
	return out, nil
}

// ReadyByProbes estimates when a tool started seeing drops from the probes
// it reported: probes arrive at a steady pace from the tool's start and a
// tool sees every one once attached (they come one a millisecond, which no
// tool loses), so the first probe it saw is the seen-th from the end. It
// returns the send time of that probe, ns after start, and false when the
// tool saw no probe (not attached within the probe phase) or more probes
// than were sent (the count is not the probes').
func ReadyByProbes(sent []uint64, seen uint64, start uint64) (uint64, bool) {
	if seen == 0 || seen > uint64(len(sent)) {
		return 0, false
	}
	first := sent[uint64(len(sent))-seen]
	if first < start {
		return 0, true
	}
	return first - start, true
}

// FloodResult is the flood sender's closing line, "flood sent=N errors=E
// ns=T".
type FloodResult struct {
	Sent, Errors, NS uint64
}

// PPS is the sender's rate.
func (f FloodResult) PPS() float64 {
	if f.NS == 0 {
		return 0
	}
	return float64(f.Sent) / (float64(f.NS) / 1e9)
}

var floodRE = regexp.MustCompile(`flood sent=(\d+) errors=(\d+) ns=(\d+)`)

// ParseFlood reads the flood sender's output.
func ParseFlood(out string) (FloodResult, error) {
	m := floodRE.FindStringSubmatch(out)
	if m == nil {
		return FloodResult{}, fmt.Errorf("parsing flood output: no \"flood sent=\" line in %q", out)
	}
	var f FloodResult
	f.Sent, _ = strconv.ParseUint(m[1], 10, 64)
	f.Errors, _ = strconv.ParseUint(m[2], 10, 64)
	f.NS, _ = strconv.ParseUint(m[3], 10, 64)
	return f, nil
}
