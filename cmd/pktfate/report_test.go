package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// captureFiles runs pktfate trace into an NDJSON file and a pcapng file
// while UDP goes to a closed port (and, when nftables is there, a port a
// rule drops), and stops it with sig.
func captureFiles(t *testing.T, sig os.Signal, packets int) (ndjson, pcapng string) {
	t.Helper()
	name := fmt.Sprintf("pktfate-rep-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	ns, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	dir := t.TempDir()
	ndjson, pcapng = filepath.Join(dir, "cap.ndjson"), filepath.Join(dir, "cap.pcapng")
	// The chain first: netfilter links attach where a chain is, and a
	// chain made during a capture is found within a second.
	if _, err := ns.Exec(t.Context(), "table inet t {\n chain c {\n  type filter hook input priority 0;\n  udp dport 99 drop\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	r := startTrace(t, "--output-json", "--output-file", ndjson, "--output-pcapng", pcapng, "--filter-netns", name)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), packets)
	sendUDP(t, ns, "udp6", netip.MustParseAddrPort("[::1]:9"), 2)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:99"), 3)
	r.stop(t, sig)
	for _, f := range []string{ndjson, pcapng} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	return ndjson, pcapng
}

func runPktfate(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(pktfateBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func lastLine(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1] + "\n"
}

// TestReportMatchesLiveRun: `pktfate report` on the NDJSON and on the
// pcapng prints exactly the summary the live run printed, and tshark reads
// the pcapng with every packet's fate as its comment.
func TestReportMatchesLiveRun(t *testing.T) {
	testutil.RequireRoot(t)
	ndjson, pcapng := captureFiles(t, os.Interrupt, 5)
	live := lastLine(t, ndjson)
	if !strings.Contains(live, `"type":"summary"`) || !strings.Contains(live, `"NO_SOCKET":7`) {
		t.Fatalf("live summary: %s", live)
	}
	for _, f := range []string{ndjson, pcapng} {
		out, errOut, err := runPktfate(t, "report", "--output-json", f)
		if err != nil {
			t.Fatalf("report %s: %v: %s", f, err, errOut)
		}
		if out != live {
			t.Errorf("report of %s differs from the live summary:\n got %s\nwant %s", filepath.Base(f), out, live)
		}
	}
	out, _, err := runPktfate(t, "report", pcapng)
	if err != nil || !strings.Contains(out, "drops by reason:") || !strings.Contains(out, "complete: nothing lost") {
		t.Errorf("text report: %v\n%s", err, out)
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		if testutil.InVM() != "" {
			return // the VMs carry no Wireshark; the host run checks it
		}
		t.Fatal("tshark is needed to check Wireshark reads the pcapng (make deps installs it)")
	}
	com, err := exec.Command(tshark, "-r", pcapng, "-T", "fields", "-e", "frame.comment", "-e", "udp.dstport").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	var noSocket, nfDrop int
	for _, l := range strings.Split(strings.TrimSpace(string(com)), "\n") {
		switch {
		case strings.Contains(l, "fate=drop reason=NO_SOCKET") && strings.HasSuffix(l, "\t9"):
			noSocket++
		case strings.Contains(l, "fate=drop reason=NETFILTER_DROP") && strings.Contains(l, "hook=LOCAL_IN") && strings.HasSuffix(l, "\t99"):
			nfDrop++
		}
	}
	// The netfilter drops are seen by ebpf and nf: one packet block each.
	if noSocket != 7 || nfDrop != 3*2 {
		t.Errorf("tshark shows %d NO_SOCKET and %d LOCAL_IN netfilter packets with comments, want 7 and 6:\n%s", noSocket, nfDrop, com)
	}
}

// TestPcapngValidAfterSIGTERMUnderLoad: a capture ended by SIGTERM while
// packets flood in reads cleanly to its last packet.
func TestPcapngValidAfterSIGTERMUnderLoad(t *testing.T) {
	testutil.RequireRoot(t)
	ndjson, pcapng := captureFiles(t, syscall.SIGTERM, 3000)
	for _, f := range []string{ndjson, pcapng} {
		if _, errOut, err := runPktfate(t, "report", f); err != nil || errOut != "" {
			t.Errorf("report %s after SIGTERM: %v: %s", f, err, errOut)
		}
	}
	if testutil.InVM() != "" {
		return // the VMs carry no Wireshark; the host run checks it
	}
	if out, err := exec.Command("tshark", "-r", pcapng, "-q").CombinedOutput(); err != nil {
		t.Errorf("tshark rejects the pcapng: %v: %s", err, out)
	}
}

// TestReportDamagedFiles: a cut or corrupted capture still gets a report
// of what comes before the damage, and an error naming where it is.
func TestReportDamagedFiles(t *testing.T) {
	testutil.RequireRoot(t)
	ndjson, pcapng := captureFiles(t, os.Interrupt, 20)
	dir := t.TempDir()
	cut := func(src string, keep float64) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, fmt.Sprintf("cut-%d-%s", int(keep*100), filepath.Base(src)))
		if err := os.WriteFile(dst, b[:int(float64(len(b))*keep)], 0o600); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	for _, f := range []string{cut(ndjson, 0.5), cut(pcapng, 0.5)} {
		out, errOut, err := runPktfate(t, "report", f)
		if err == nil {
			t.Errorf("report of %s succeeded", f)
		}
		if !strings.Contains(errOut, "offset") || !strings.Contains(errOut, "truncated") {
			t.Errorf("report of %s: error does not say where or what: %q", f, errOut)
		}
		if !strings.Contains(out, "completeness UNKNOWN") || !strings.Contains(out, "ends before its summary") || strings.Contains(out, "complete: nothing lost") {
			t.Errorf("report of %s claims what it cannot know:\n%s", f, out)
		}
		if !strings.Contains(out, "drops by reason:") || !strings.Contains(out, "NO_SOCKET") {
			t.Errorf("report of %s lost what came before the damage:\n%s", f, out)
		}
		if strings.Contains(errOut, "goroutine ") {
			t.Errorf("stack trace: %s", errOut)
		}
	}
	// Garbage in the middle of an NDJSON file.
	b, _ := os.ReadFile(ndjson)
	lines := strings.SplitAfter(string(b), "\n")
	lines[3] = "{not json\n"
	bad := filepath.Join(dir, "bad.ndjson")
	os.WriteFile(bad, []byte(strings.Join(lines, "")), 0o600)
	if _, errOut, err := runPktfate(t, "report", bad); err == nil || !strings.Contains(errOut, "line 4 (byte offset") {
		t.Errorf("corrupt line: %v %q", err, errOut)
	}
	// Not a capture at all.
	os.WriteFile(filepath.Join(dir, "x.txt"), []byte("hello"), 0o600)
	if _, errOut, err := runPktfate(t, "report", filepath.Join(dir, "x.txt")); err == nil || !strings.Contains(errOut, "neither NDJSON, pcapng nor a raw capture") {
		t.Errorf("not a capture: %v %q", err, errOut)
	}
}
