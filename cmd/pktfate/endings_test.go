package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/report"
	"github.com/pktfate/pktfate/internal/testutil"
)

// The ways a capture ends: each must finish every output that still
// works, with its summary, and release what the sources took from the
// kernel.

// startTraceTo starts pktfate trace writing its standard output to stdout
// and waits until it is attached.
func startTraceTo(t *testing.T, stdout io.Writer, args ...string) *traceRun {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	r := &traceRun{}
	r.cmd = exec.Command(pktfateBinary(t), append([]string{"trace", "--ready-file", ready}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	waitReady(t, r, ready)
	return r
}

func waitReady(t *testing.T, r *traceRun, ready string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // TCG VMs are slow
	for {
		if _, err := os.Stat(ready); err == nil {
			return
		}
		if r.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("pktfate trace never became ready: %s", r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendUntilExit sends UDP to a closed port until the process ends by
// itself, and returns how it ended.
func sendUntilExit(t *testing.T, r *traceRun, ns *netns.NS, dst netip.AddrPort) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		case <-deadline:
			t.Fatalf("pktfate did not stop by itself: %s", r.stderr.String())
		case <-time.After(50 * time.Millisecond):
			sendUDP(t, ns, "udp4", dst, 5)
		}
	}
}

// errorLines are the lines of stderr that are not notices of sources this
// kernel cannot run.
func errorLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.Contains(l, " not running: ") {
			out = append(out, l)
		}
	}
	return out
}

// checkPcapng checks a pcapng reads to its end with its summary, in
// pktfate report and in tshark (on the host; the VMs have no tshark).
func checkPcapng(t *testing.T, path string) *report.Result {
	t.Helper()
	res, err := report.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if !res.HasSummary || len(res.Damage) > 0 {
		t.Errorf("%s: summary %v, damage %v", path, res.HasSummary, res.Damage)
	}
	if testutil.InVM() == "" {
		if out, err := exec.Command("tshark", "-r", path, "-q").CombinedOutput(); err != nil {
			t.Errorf("tshark rejects %s: %v: %s", path, err, out)
		}
	}
	return res
}

// TestTraceClosedStdout: `pktfate trace | head`: the closed pipe stops the
// capture as a signal would (exit 0, one line saying so), the pcapng is
// finished with its summary, and NET_DM, where pktfate started it, is
// stopped (a second pktfate starts it again, not passively).
func TestTraceClosedStdout(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	dir := t.TempDir()
	pcap, ready := filepath.Join(dir, "cap.pcapng"), filepath.Join(dir, "ready")
	const port = 47125 // NET_DM alerts carry no netns: select by port
	r := &traceRun{}
	r.cmd = exec.Command(pktfateBinary(t), "trace", "--ready-file", ready, "-w", pcap, fmt.Sprintf("udp port %d", port))
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	waitReady(t, r, ready)
	dst := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port))
	sendUDP(t, ns, "udp4", dst, 5)
	// head -n 3: the header and two packets, then the reader goes away.
	br := bufio.NewReader(out)
	for i := range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("line %d: %v (%s)", i, err, r.stderr.String())
		}
	}
	out.Close()
	if err := sendUntilExit(t, r, ns, dst); err != nil {
		t.Fatalf("pktfate trace | head: %v, want exit status 0: %s", err, r.stderr.String())
	}
	lines := errorLines(r.stderr.String())
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "pktfate: output closed (broken pipe): stopped after ") {
		t.Errorf("stderr: %q, want one line saying the output closed", lines)
	}
	res := checkPcapng(t, pcap)
	if res.Summary.ByReason["NO_SOCKET"] < 5 {
		t.Errorf("pcapng summary: %v drops by reason, want the packets sent", res.Summary.ByReason)
	}
	if testutil.InVM() != "" {
		_, errOut, err := runPktfate(t, "trace", "--source", "ebpf,dropmon", "--duration", "1s", "udp port 9")
		if err != nil || strings.Contains(errOut, "already running") {
			t.Errorf("after | head NET_DM was left running: %v %s", err, errOut)
		}
	}
}

// TestTraceSIGHUP: a closed terminal (SIGHUP) is a stop too: an idle
// capture's NDJSON file holds its summary, its pcapng the summary block.
func TestTraceSIGHUP(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	dir := t.TempDir()
	nd, pcap := filepath.Join(dir, "cap.ndjson"), filepath.Join(dir, "cap.pcapng")
	r := startTrace(t, "--output-json", "--output-file", nd, "-w", pcap, "--filter-netns", fmt.Sprint(ns.Inode), "udp port 9")
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("SIGHUP: %v, want exit status 0: %s", err, r.stderr.String())
	}
	b, err := os.ReadFile(nd)
	if err != nil {
		t.Fatal(err)
	}
	events, summary := parseNDJSON(t, b)
	if len(events) != 0 || summary["events"] != float64(0) {
		t.Errorf("idle capture: %d events, summary %v", len(events), summary)
	}
	checkPcapng(t, pcap)
}

// TestTraceSIGTERMWhileSending: SIGTERM while packets still arrive: the
// NDJSON and the pcapng end at the same packet, hold the same packets,
// and both have their summary.
func TestTraceSIGTERMWhileSending(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	dir := t.TempDir()
	nd, pcap := filepath.Join(dir, "cap.ndjson"), filepath.Join(dir, "cap.pcapng")
	r := startTrace(t, "--source", "ebpf", "--output-json", "--output-file", nd, "-w", pcap, "--filter-netns", fmt.Sprint(ns.Inode), "udp")
	stop := make(chan struct{})
	var sent atomic.Int64
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := ns.SendUDP("udp4", netip.MustParseAddrPort("127.0.0.1:9"), 20, []byte("pktfate")); err != nil {
				return
			}
			sent.Add(20)
		}
	}()
	defer func() { close(stop); <-sending }()
	// Signal once the capture has written a good part of the flood.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if st, err := os.Stat(nd); err == nil && st.Size() > 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the capture wrote nothing: %s", r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := sent.Load()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v: %s", err, r.stderr.String())
	}
	if sent.Load() == before {
		t.Log("the sender had not sent again by the end (a slow machine); the capture still ran under load")
	}
	b, err := os.ReadFile(nd)
	if err != nil {
		t.Fatal(err)
	}
	events, summary := parseNDJSON(t, b)
	var ndTimes []int64
	for _, e := range events {
		tm, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e["time"]))
		if err != nil {
			t.Fatal(err)
		}
		ndTimes = append(ndTimes, tm.UnixNano())
	}
	var pcTimes []int64
	_, err = report.ReadFileWith(pcap, report.Options{Records: func(rec report.Record) error {
		pcTimes = append(pcTimes, rec.Event.Time.UnixNano())
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkPcapng(t, pcap)
	if len(ndTimes) == 0 || len(ndTimes) != len(pcTimes) || summary["events"] != float64(len(events)) {
		t.Fatalf("NDJSON has %d events (summary %v), the pcapng %d packets", len(ndTimes), summary["events"], len(pcTimes))
	}
	if ndTimes[len(ndTimes)-1] != pcTimes[len(pcTimes)-1] || ndTimes[0] != pcTimes[0] {
		t.Errorf("the NDJSON and the pcapng end at different packets: %d and %d", ndTimes[len(ndTimes)-1], pcTimes[len(pcTimes)-1])
	}
	for i := range ndTimes {
		if ndTimes[i] != pcTimes[i] {
			t.Fatalf("packet %d differs: NDJSON %d, pcapng %d", i, ndTimes[i], pcTimes[i])
		}
	}
}

// TestTraceFullDisk: an output on a full disk (/dev/full) stops the
// capture with one clear line naming it; every other output is complete:
// the NDJSON and the pcapng with their summary (tshark reads the pcapng),
// the recording readable.
func TestTraceFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	for _, full := range []string{"stdout", "--output-file", "--output-pcapng", "--record"} {
		t.Run(strings.TrimLeft(full, "-"), func(t *testing.T) {
			ns := testutil.NewNS(t)
			dir := t.TempDir()
			paths := map[string]string{"--output-file": filepath.Join(dir, "cap.ndjson"),
				"--output-pcapng": filepath.Join(dir, "cap.pcapng"), "--record": filepath.Join(dir, "cap.rec")}
			var stdout io.Writer = io.Discard
			if full == "stdout" {
				f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				stdout = f
				delete(paths, "--output-file")
			} else {
				paths[full] = "/dev/full"
			}
			args := []string{"--filter-netns", fmt.Sprint(ns.Inode)}
			if full != "stdout" {
				args = append(args, "--output-json")
			}
			for flagName, p := range paths {
				args = append(args, flagName, p)
			}
			args = append(args, "udp")
			r := startTraceTo(t, stdout, args...)
			err := sendUntilExit(t, r, ns, netip.MustParseAddrPort("127.0.0.1:9"))
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("%v, want exit status 1: %s", err, r.stderr.String())
			}
			lines := errorLines(r.stderr.String())
			name := full
			if full != "stdout" {
				name = full + " /dev/full"
			}
			if len(lines) != 1 || !strings.Contains(lines[0], name+": ") || !strings.Contains(lines[0], "no space left on device") {
				t.Errorf("stderr %q: want one line naming %s and the full disk", lines, name)
			}
			for flagName, p := range paths {
				if p == "/dev/full" {
					continue
				}
				switch flagName {
				case "--output-file":
					b, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					events, summary := parseNDJSON(t, b)
					// A pcapng's header and a recording's first line fail
					// at the first flush, maybe before any packet came.
					if summary["events"] != float64(len(events)) || len(events) == 0 && full == "stdout" {
						t.Errorf("NDJSON: %d events, summary %v", len(events), summary["events"])
					}
				case "--output-pcapng":
					// Text on a full stdout fails at the first packet's
					// flush: the pcapng has that packet.
					if res := checkPcapng(t, p); full == "stdout" && res.Records == 0 {
						t.Errorf("the pcapng lacks the packets stdout failed on")
					}
				case "--record":
					out, errOut, err := runPktfate(t, "report", p)
					if !strings.Contains(out, "is a recording") || strings.Contains(errOut, "damaged") || strings.Contains(errOut, "panic") ||
						full == "stdout" && !strings.Contains(out, "NO_SOCKET") {
						t.Errorf("report of the recording: %v %s\n%s", err, errOut, out)
					}
				}
			}
		})
	}
}

// TestDemoNotRoot: pktfate demo without root prints one line saying so,
// no stack trace.
func TestDemoNotRoot(t *testing.T) {
	testutil.RequireRoot(t) // to run it as another user
	cmd := exec.Command(pktfateBinary(t), "demo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("demo as nobody: %v, want exit status 1: %s", err, e.String())
	}
	if e.String() != "pktfate: the demo needs root (it creates network namespaces and loads BPF programs): run sudo pktfate demo\n" || o.Len() != 0 {
		t.Errorf("demo as nobody: stdout %q, stderr %q", o.String(), e.String())
	}
}
