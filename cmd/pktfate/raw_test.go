package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/ringrec"
	"github.com/pktfate/pktfate/internal/ringrec/ringrectest"
	"github.com/pktfate/pktfate/internal/testutil"
)

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestTraceRawCapture: trace --output-raw writes the ring's records and
// nothing else; pktfate report renders them afterwards as the live trace
// would have: every drop, named, with the capture's ledger.
func TestTraceRawCapture(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	raw := filepath.Join(t.TempDir(), "drops.raw")
	r := startTrace(t, "--output-raw", raw, "--filter-netns", fmt.Sprint(ns.Inode), "--filter-fate", "drop", "udp")
	const n4, n6 = 200, 50
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), n4)
	sendUDP(t, ns, "udp6", netip.MustParseAddrPort("[::1]:9"), n6)
	r.stop(t, os.Interrupt)
	if r.stdout.Len() != 0 {
		t.Errorf("--output-raw wrote to stdout: %q", r.stdout.String())
	}
	if want := fmt.Sprintf("pktfate: %d records (", n4+n6); !strings.Contains(r.stderr.String(), want) || !strings.Contains(r.stderr.String(), "none lost") {
		t.Errorf("trace said %q, want %q... none lost", r.stderr.String(), want)
	}

	out, errOut, err := runPktfate(t, "report", "--output-json", raw)
	if err != nil {
		t.Fatalf("report: %v: %s", err, errOut)
	}
	_, summary := parseNDJSON(t, []byte(out))
	if summary["drops"] != float64(n4+n6) || summary["by_reason"].(map[string]any)["NO_SOCKET"] != float64(n4+n6) {
		t.Errorf("report of the raw capture: drops %v by reason %v, want %d NO_SOCKET", summary["drops"], summary["by_reason"], n4+n6)
	}
	checkNoLoss(t, summary)

	out, errOut, err = runPktfate(t, "report", "--packets", raw, "ip6")
	if err != nil {
		t.Fatalf("report --packets: %v: %s", err, errOut)
	}
	if c := strings.Count(out, "NO_SOCKET"); c != n6+1 || !strings.Contains(out, "[::1]") || !strings.Contains(out, fmt.Sprintf("%d of %d packets listed", n6, n4+n6)) {
		t.Errorf("report --packets ip6: %d NO_SOCKET lines (want %d and the summary's):\n%s", c, n6, out)
	}
}

// TestTraceRawEndings: a raw capture stopped by a signal in a flood is a
// whole file with its ledger; one killed outright keeps what it flushed,
// and its report says the losses are unknown (exit status 4).
func TestTraceRawEndings(t *testing.T) {
	testutil.RequireRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			ns := testutil.NewNS(t)
			raw := filepath.Join(t.TempDir(), "flood.raw")
			r := startTrace(t, "--output-raw", raw, "--filter-netns", fmt.Sprint(ns.Inode))
			stop := make(chan struct{})
			flooded := make(chan error, 1)
			go func() {
				for {
					select {
					case <-stop:
						flooded <- nil
						return
					default:
					}
					if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 200, []byte("flood")); err != nil {
						flooded <- err
						return
					}
				}
			}()
			// Signal in the middle of the flood, once records are on disk
			// (the writer flushes each MiB).
			deadline := time.Now().Add(60 * time.Second)
			for {
				if st, err := os.Stat(raw); err == nil && st.Size() > 2<<20 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no records on disk after 60 s of flood")
				}
				time.Sleep(20 * time.Millisecond)
			}
			r.cmd.Process.Signal(sig)
			werr := r.cmd.Wait()
			close(stop)
			if err := <-flooded; err != nil {
				t.Fatal(err)
			}
			out, errOut, err := runPktfate(t, "report", "--output-json", raw)
			_, summary := parseNDJSON(t, []byte(out))
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "damaged") {
				t.Fatalf("report: %s", errOut)
			}
			if summary["drops"].(float64) == 0 {
				t.Errorf("report of the capture: no drops: %v", summary)
			}
			if sig == syscall.SIGKILL {
				if exitCode(err) != exitUnknown || summary["complete"] != nil {
					t.Errorf("killed capture: report exit %d complete %v, want %d and unknown (null)", exitCode(err), summary["complete"], exitUnknown)
				}
				return
			}
			if werr != nil {
				t.Fatalf("trace ended by %s: %v: %s", sig, werr, r.stderr.String())
			}
			if c := exitCode(err); (c != 0 && c != exitIncomplete) || summary["complete"] == nil {
				t.Errorf("capture ended by %s: report exit %d complete %v, want 0 or %d and known: %s", sig, c, summary["complete"], exitIncomplete, errOut)
			}
			if !strings.Contains(r.stderr.String(), fmt.Sprintf("records (")) {
				t.Errorf("trace said %q", r.stderr.String())
			}
		})
	}
}

// writeRawFixtures writes the recorded ring records rounds times as trace
// --output-raw would, with its trailer, ran in namespace home.
func writeRawFixtures(t *testing.T, home uint32, rounds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fixtures.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := ringrectest.WriteRaw(t, f, ringrec.RawHeader{HomeNetns: home}, ringrectest.Fixtures(t), rounds)
	start := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	if err := w.Close(ringrec.RawTrailer{Start: start, End: start.Add(time.Second),
		Lost: []fate.Loss{{Observer: "ebpf", Name: "ringbuf_full"}}, Sources: []fate.SourceStatus{{Name: "ebpf", Running: true}}}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReportRawHomeAndClosedOutput: report's text leaves the namespace
// the capture ran in unnamed, as the live trace did (a raw capture's
// header says which it was), and names the others; a reader that goes
// away (report | head) ends the report quietly, with the status that says
// completeness is unknown (the report stopped before it knew).
func TestReportRawHomeAndClosedOutput(t *testing.T) {
	const ns = 4026532177 // the first fixture's namespace (testdata/records)
	home := writeRawFixtures(t, ns, 1)
	away := writeRawFixtures(t, 1, 1)
	out, errOut, err := runPktfate(t, "report", "-n", "-l", home)
	if err != nil {
		t.Fatalf("report: %v: %s", err, errOut)
	}
	if !strings.Contains(out, " lo\n") || strings.Contains(out, fmt.Sprintf("lo@%d", ns)) {
		t.Errorf("report of a capture run in namespace %d names it:\n%s", ns, out)
	}
	out, errOut, err = runPktfate(t, "report", "-n", "-l", away)
	if err != nil {
		t.Fatalf("report: %v: %s", err, errOut)
	}
	if !strings.Contains(out, fmt.Sprintf(" lo@%d\n", ns)) {
		t.Errorf("report of a capture run in another namespace does not name %d:\n%s", ns, out)
	}

	big := writeRawFixtures(t, ns, 5000) // far more than a pipe holds
	for _, args := range [][]string{{"report", "-l", big}, {"report", "-l", "--output-json", big}} {
		cmd := exec.Command(pktfateBinary(t), args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 64)
		if _, err := pipe.Read(line); err != nil {
			t.Fatalf("%v: reading its first bytes: %v", args, err)
		}
		pipe.Close() // what head does once it has its lines
		err = cmd.Wait()
		if code := exitCode(err); code != 4 || stderr.Len() != 0 {
			t.Errorf("%v with its reader gone: exit status %d (want 4), stderr %q", args, code, stderr.String())
		}
	}
}
