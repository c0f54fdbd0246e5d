package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
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

// allObserversPort is the UDP port the all-observers test drops in LOCAL_IN.
const allObserversPort = 47124

// TestTraceConfirmedByAllObservers is the mission's proof in the matrix:
// a DROP rule on LOCAL_IN is seen by the eBPF tracepoints, the netfilter
// attribution (links or fexit), the kernel's drop monitor and pktfate's own
// module, and every drop becomes one fate that all four confirm, in NDJSON
// and in the pcapng, which `pktfate report` reads back to the same summary.
// The pcapng goes to the host as an artifact, where
// TestMatrixCapturesInWireshark has tshark read it. On the host (no
// modules, no NET_DM) asking for the module must fail with how to load it.
func TestTraceConfirmedByAllObservers(t *testing.T) {
	testutil.RequireRoot(t)
	if testutil.InVM() == "" {
		_, errOut, err := runPktfate(t, "trace", "--source", "ebpf,kmod", "--duration", "1s")
		if err == nil || !strings.Contains(errOut, "source kmod cannot run") || !strings.Contains(errOut, "insmod") ||
			strings.Count(errOut, "\n") != 1 {
			t.Errorf("host without the module: %v %q", err, errOut)
		}
		return
	}
	testutil.LoadModule(t)
	// On a busy guest (issue 13: the module's and the BPF program's clocks
	// were read 15 ms apart and split a record), one busy process per CPU.
	testutil.LoadCPU(t, 0, 1)
	ns := testutil.NewNS(t)
	rule := fmt.Sprintf("table inet t {\n chain in {\n  type filter hook input priority 0;\n  udp dport %d drop\n }\n}\n", allObserversPort)
	if out, err := ns.Exec(t.Context(), rule, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	dir := t.TempDir()
	ndjson, pcapng, record := filepath.Join(dir, "all.ndjson"), filepath.Join(dir, "all.pcapng"), filepath.Join(dir, "all.jsonl")
	// NET_DM alerts carry no netns: select the test's packets by port.
	// Port closedPort has no socket: a drop ebpf and NET_DM see, outside
	// netfilter (nf and kmod are blind to it by design).
	const closedPort = allObserversPort + 2
	r := startTrace(t, "--output-json", "--output-file", ndjson, "--output-pcapng", pcapng, "--record", record,
		"--source", "ebpf,nf,dropmon,kmod", "--correlate-window", "3s",
		fmt.Sprintf("udp port %d or udp port %d", allObserversPort, closedPort))
	const n4, n6, nClosed = 4, 3, 2
	sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), allObserversPort), n4)
	sendUDP(t, ns, "udp6", netip.AddrPortFrom(netip.IPv6Loopback(), allObserversPort), n6)
	sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), closedPort), nClosed)
	r.stop(t, os.Interrupt)
	out, err := os.ReadFile(ndjson)
	if err != nil {
		t.Fatal(err)
	}
	fates, summary := parseFates(t, out)
	families := map[string]int{}
	closed := 0
	for _, f := range fates {
		obs := f["observers"].(map[string]any)
		status := func(o string) any { return obs[o].(map[string]any)["status"] }
		if f["dport"] == float64(closedPort) {
			if f["verdict"] != "confirmed" || f["reason"] != "NO_SOCKET" || status("ebpf") != "saw" || status("dropmon") != "saw" ||
				status("nf") != "blind" || status("kmod") != "blind" {
				t.Errorf("drop to a closed port: %v", f)
			}
			closed++
			continue
		}
		ok := f["verdict"] == "confirmed" && f["reason"] == "NETFILTER_DROP" && f["hook"] == "LOCAL_IN"
		for _, o := range fate.Observers {
			ok = ok && status(o) == "saw"
		}
		if !ok {
			t.Errorf("fate not confirmed by all four observers in LOCAL_IN: %v", f)
			continue
		}
		families[f["family"].(string)]++
	}
	if families["ipv4"] != n4 || families["ipv6"] != n6 || closed != nClosed || len(fates) != n4+n6+nClosed {
		t.Errorf("%d fates: confirmed by all per family %v, %d to the closed port; want %d ipv4, %d ipv6, %d",
			len(fates), families, closed, n4, n6, nClosed)
	}
	checkNoLoss(t, summary)
	if summary["complete"] != true {
		t.Errorf("summary not complete: %v", summary)
	}
	live := lastLine(t, ndjson)
	for _, f := range []string{ndjson, pcapng} {
		got, errOut, err := runPktfate(t, "report", "--output-json", f)
		if err != nil || got != live {
			t.Errorf("report of %s: %v %s\n got %s\nwant %s", filepath.Base(f), err, errOut, got, live)
		}
	}
	capture, err := os.ReadFile(pcapng)
	if err != nil {
		t.Fatal(err)
	}
	testutil.SendArtifact(t, "all-observers.pcapng", capture)
	// The correlator's input, for tracer's replay tests (testdata/streams).
	rec, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	testutil.SendArtifact(t, "all-observers.jsonl", rec)
}

// TestMatrixCapturesInWireshark runs on the host after the kernel matrix
// (make test points PKTFATE_MATRIX_ARTIFACTS at what the guests sent out):
// tshark opens the pcapng that TestTraceConfirmedByAllObservers wrote on
// each kernel and shows every drop once per observer, each with its fate,
// hook and the four confirming observers as the packet comment.
func TestMatrixCapturesInWireshark(t *testing.T) {
	dir := os.Getenv("PKTFATE_MATRIX_ARTIFACTS")
	if dir == "" || testutil.InVM() != "" {
		t.Skip("runs on the host after the kernel matrix: make test sets PKTFATE_MATRIX_ARTIFACTS")
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark is needed (make deps installs it)")
	}
	lines, _ := filepath.Glob(filepath.Join(dir, "*", "all-observers.pcapng"))
	if len(lines) == 0 {
		t.Fatalf("no all-observers.pcapng under %s: the matrix sent none", dir)
	}
	for _, f := range lines {
		out, err := exec.Command(tshark, "-r", f, "-Y", fmt.Sprintf("udp.dstport == %d", allObserversPort), "-T", "fields", "-E", "separator=|",
			"-e", "frame.interface_name", "-e", "frame.comment", "-e", "udp.dstport").Output()
		if err != nil {
			t.Errorf("tshark -r %s: %v", f, err)
			continue
		}
		per := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			p := strings.Split(l, "|")
			if len(p) != 3 || p[2] != strconv.Itoa(allObserversPort) || !strings.Contains(p[1], "fate=drop reason=NETFILTER_DROP") ||
				!strings.Contains(p[1], "hook=LOCAL_IN") || !strings.Contains(p[1], "verdict=confirmed") ||
				!strings.Contains(p[1], "observers=ebpf+nf+dropmon+kmod") {
				t.Errorf("%s: packet %q", f, l)
				continue
			}
			per[strings.TrimPrefix(p[0], "pktfate:")]++
		}
		for _, o := range fate.Observers {
			if per[o] != 7 {
				t.Errorf("%s: %d packets on interface %s, want 7 (%v)", f, per[o], o, per)
			}
		}
	}
}

// TestTraceNetfilterEveryNamespace: without --filter-netns the netfilter
// attribution covers every network namespace (links are attached in each
// one present at the start, and in new ones within a second; fexit sees
// all anyway), so drops in a namespace made before the capture and in one
// made during it are both confirmed by ebpf and nf.
func TestTraceNetfilterEveryNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	const port = 47125
	rule := fmt.Sprintf("table inet t {\n chain in {\n  type filter hook input priority 0;\n  udp dport %d drop\n }\n}\n", port)
	before := testutil.NewNS(t)
	if out, err := before.Exec(t.Context(), rule, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	r := startTrace(t, "-v", "--output-json", "--source", "ebpf,nf", fmt.Sprintf("udp port %d", port))
	// Named, as `ip netns add` and container runtimes make them: the
	// rescans look at mounts and processes, not at every open descriptor.
	after, err := netns.New(fmt.Sprintf("pktfate-late-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { after.Close() })
	if out, err := after.Exec(t.Context(), rule, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	time.Sleep(2500 * time.Millisecond) // two rescans
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	sendUDP(t, before, "udp4", dst, 2)
	sendUDP(t, after, "udp4", dst, 1)
	r.stop(t, os.Interrupt)
	fates, _ := parseFates(t, r.stdout.Bytes())
	var inBefore, inAfter int
	for _, f := range fates {
		nf := f["observers"].(map[string]any)["nf"].(map[string]any)
		switch uint32(f["netns"].(float64)) {
		case before.Inode:
			inBefore++
		case after.Inode:
			inAfter++
		default:
			t.Errorf("fate from another namespace: %v", f)
			continue
		}
		if f["verdict"] != "confirmed" || nf["status"] != "saw" || f["hook"] != "LOCAL_IN" {
			t.Errorf("drop not attributed by nf: %v", f)
		}
	}
	if inBefore != 2 || inAfter != 1 {
		t.Errorf("%d and %d fates in the namespaces made before and during the capture, want 2 and 1\n%s", inBefore, inAfter, r.stdout.String())
	}
}
