package peers

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"strings"
)

// Kind is how the guest driver runs a tool and reads what it saw.
type Kind string

const (
	KindBaseline       Kind = "baseline"        // no tool: the sender's own rate
	KindPerf           Kind = "perf"            // perf record ARGS -o FILE; perf script counts
	KindBpftraceMap    Kind = "bpftrace-map"    // bpftrace counting by reason in a map
	KindBpftracePrintf Kind = "bpftrace-printf" // bpftrace printing each drop
	KindDropwatch      Kind = "dropwatch"       // dropwatch, NET_DM packet mode
	// KindNetdmUnread is NET_DM in packet mode with its events group
	// joined by a socket nobody reads: what the kernel's side of NET_DM
	// costs the sender, the bound of any NET_DM reader's pps/base.
	KindNetdmUnread Kind = "netdm-unread"
	KindPktfate     Kind = "pktfate" // pktfate trace ARGS --output-json
	// KindPktfateRaw is pktfate trace ARGS --output-raw FILE, rendered
	// after the run by pktfate report --output-json FILE.
	KindPktfateRaw Kind = "pktfate-raw"
)

// Tool is one line of the tools file: a name for the table, its kind and
// its arguments (the tool's own flags; the driver adds only where output
// goes).
type Tool struct {
	Name string
	Kind Kind
	Args []string
}

// The bpftrace programs of the two bpftrace rows.
const (
	BpftraceMapProgram    = `tracepoint:skb:kfree_skb { @[args->reason] = count(); }`
	BpftracePrintfProgram = `tracepoint:skb:kfree_skb { printf("%d\n", args->reason); }`
)

// ParseTools reads a tools file: one tool a line, "name | kind | args"
// (args split on blanks, no quoting; '#' starts a comment line).
func ParseTools(r io.Reader) ([]Tool, error) {
	var tools []Tool
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "|")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("tools file line %d: want \"name | kind | args\", got %q", n, line)
		}
		t := Tool{Name: strings.TrimSpace(parts[0]), Kind: Kind(strings.TrimSpace(parts[1]))}
		if len(parts) == 3 {
			t.Args = strings.Fields(parts[2])
		}
		switch t.Kind {
		case KindBaseline, KindPerf, KindBpftraceMap, KindBpftracePrintf, KindDropwatch, KindNetdmUnread, KindPktfate, KindPktfateRaw:
		default:
			return nil, fmt.Errorf("tools file line %d: unknown kind %q (want baseline, perf, bpftrace-map, bpftrace-printf, dropwatch, netdm-unread, pktfate or pktfate-raw)", n, t.Kind)
		}
		if t.Name == "" {
			return nil, fmt.Errorf("tools file line %d: empty name", n)
		}
		tools = append(tools, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tools) == 0 || tools[0].Kind != KindBaseline {
		return nil, fmt.Errorf("tools file: the first tool must be the baseline (kind baseline)")
	}
	return tools, nil
}

// Run is one tool's run in a guest, as the driver reports it.
type Run struct {
	Tool   string `json:"tool"`
	Kind   Kind   `json:"kind"`
	Round  int    `json:"round"`
	Kernel string `json:"kernel"`
	// The flood: datagrams sent, errors, and over how long (guest ns).
	Sent uint64  `json:"sent"`
	NS   uint64  `json:"ns"`
	PPS  float64 `json:"pps"`
	// Ground truth: Udp NoPorts during the flood, RcvbufErrors (the
	// probes' drops) during the probe phase.
	NoPorts uint64 `json:"noports"`
	Probes  uint64 `json:"probes"` // probes sent
	RcvBuf  uint64 `json:"rcvbuf"` // probes dropped by the kernel
	Counts  Counts `json:"counts"` // what the tool reported, by class
	Lost    uint64 `json:"lost"`   // the loss the tool reports, in its own unit
	// Overruns is how often the tool reported a netlink overrun
	// (ENOBUFS: an unknown number of events lost each time).
	Overruns uint64 `json:"overruns,omitempty"`
	LostHow  string `json:"lost_how"` // what Lost counts
	// Ready: guest ns from the tool's start to its first probe seen, and
	// (pktfate) to its --ready-file; 0 with ok false when unknown.
	ReadyProbeNS uint64 `json:"ready_probe_ns"`
	ReadyProbeOK bool   `json:"ready_probe_ok"`
	ReadyFileNS  uint64 `json:"ready_file_ns"`
	ReadyFileOK  bool   `json:"ready_file_ok"`
	Err          string `json:"error,omitempty"`
}

// DefaultTools is tools.txt, the tools file make bench-peers runs (embedded
// so that its test runs wherever the test binary does, the VM guests
// included).
//
//go:embed tools.txt
var DefaultTools string
