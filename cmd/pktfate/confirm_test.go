package main

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/internal/testutil"
)

// TestTraceConfirmedByDropmon: with the eBPF tracepoints and the kernel's
// drop monitor both running, every drop to a closed port becomes one fate
// record that both observers confirm. The host kernel has no NET_DM: there
// the explicit --source dropmon must fail with a clear message.
func TestTraceConfirmedByDropmon(t *testing.T) {
	testutil.RequireRoot(t)
	if testutil.InVM() == "" {
		_, errOut, err := runPktfate(t, "trace", "--source", "ebpf,dropmon", "--duration", "1s")
		if err == nil || !strings.Contains(errOut, "source dropmon cannot run") || !strings.Contains(errOut, "NET_DM") {
			t.Errorf("host without NET_DM: %v %q", err, errOut)
		}
		return
	}
	ns := testutil.NewNS(t)
	// NET_DM alerts carry no netns: select the test's packets by port.
	// TCG runs ten times slower than hardware: give NET_DM's kworker time.
	r := startTrace(t, "--output-json", "--source", "ebpf,dropmon", "--correlate-window", "3s", "udp port 47123")
	const n = 5
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:47123"), n)
	r.stop(t, os.Interrupt)
	fates, summary := parseFates(t, r.stdout.Bytes())
	confirmed := 0
	for _, f := range fates {
		obs := f["observers"].(map[string]any)
		ebpf, dm := obs["ebpf"].(map[string]any), obs["dropmon"].(map[string]any)
		if f["verdict"] == "confirmed" && f["reason"] == "NO_SOCKET" && ebpf["status"] == "saw" && dm["status"] == "saw" {
			confirmed++
		} else {
			t.Errorf("fate not confirmed by both: %v", f)
		}
	}
	if confirmed != n {
		t.Errorf("%d confirmed fates, want %d", confirmed, n)
	}
	checkNoLoss(t, summary)
	if summary["complete"] != true {
		t.Errorf("summary not complete: %v", summary)
	}
}
