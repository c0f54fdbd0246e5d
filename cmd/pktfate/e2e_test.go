package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

var builtBinary string

// pktfateBinary returns the binary under test: $PKTFATE_BIN (the VM
// matrix ships one) or a fresh build.
func pktfateBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("PKTFATE_BIN"); b != "" {
		return b
	}
	if builtBinary != "" {
		return builtBinary
	}
	dir, err := os.MkdirTemp("", "pktfate-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Tests run it as another user too.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pktfate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("building pktfate: %v\n%s", err, out)
	}
	builtBinary = bin
	return bin
}

func TestMain(m *testing.M) {
	rc := m.Run()
	if builtBinary != "" {
		os.RemoveAll(filepath.Dir(builtBinary))
	}
	os.Exit(rc)
}

// traceRun is a `pktfate trace` process.
type traceRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// startTrace starts pktfate trace with args and waits until it is attached.
func startTrace(t *testing.T, args ...string) *traceRun {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	r := &traceRun{}
	r.cmd = exec.Command(pktfateBinary(t), append([]string{"trace", "--ready-file", ready}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second) // TCG VMs are slow
	for {
		if _, err := os.Stat(ready); err == nil {
			return r
		}
		if r.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("pktfate trace never became ready: %s", r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for a clean exit.
func (r *traceRun) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // let the last events reach the ring
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("pktfate trace exited with %v: %s", err, r.stderr.String())
	}
}

type ndjsonLine map[string]any

func parseNDJSON(t *testing.T, out []byte) (events []ndjsonLine, summary ndjsonLine) {
	t.Helper()
	events, _, summary = parseOutput(t, out)
	return events, summary
}

// parseOutput splits NDJSON output by line type; the summary must be last.
func parseOutput(t *testing.T, out []byte) (events, fates []ndjsonLine, summary ndjsonLine) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var l ndjsonLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", sc.Text(), err)
		}
		if summary != nil {
			t.Fatalf("line after the summary: %q", sc.Text())
		}
		switch l["type"] {
		case "event":
			events = append(events, l)
		case "summary":
			summary = l
		case "fate":
			fates = append(fates, l)
		default:
			t.Fatalf("line of unknown type: %q", sc.Text())
		}
	}
	if summary == nil {
		t.Fatalf("no summary line in output:\n%s", out)
	}
	return events, fates, summary
}

// parseFates returns the fate lines and the summary of NDJSON output.
func parseFates(t *testing.T, out []byte) (fates []ndjsonLine, summary ndjsonLine) {
	t.Helper()
	_, fates, summary = parseOutput(t, out)
	return fates, summary
}

func sendUDP(t *testing.T, ns *netns.NS, network string, dst netip.AddrPort, n int) {
	t.Helper()
	if err := ns.SendUDP(network, dst, n, []byte("pktfate e2e")); err != nil {
		t.Fatal(err)
	}
}

func checkNoLoss(t *testing.T, summary ndjsonLine) {
	t.Helper()
	lost, ok := summary["lost"].([]any)
	if !ok || len(lost) == 0 {
		t.Fatalf("summary has no lost counters: %v", summary)
	}
	for _, l := range lost {
		m := l.(map[string]any)
		if m["value"].(float64) != 0 || m["unknown"] != nil {
			t.Errorf("lost %v", m)
		}
	}
	if summary["complete"] != true {
		t.Errorf("summary not complete: %v", summary["complete"])
	}
}

// TestTraceClosedPort is the matrix's basic check: N UDP packets to a
// closed port are reported exactly N times as NO_SOCKET drops in the UDP
// receive function, with their addresses, and nothing is lost. The enum
// value of NO_SOCKET differs between kernels; the name must not. The
// function is __udp4_lib_rcv up to 6.x; Debian's 7.2 inlines it into
// udp_rcv (likewise __udp6_lib_rcv into udpv6_rcv).
func TestTraceClosedPort(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		network string
		fns     []string
		dst     netip.AddrPort
	}{
		{"udp4", []string{"__udp4_lib_rcv", "udp_rcv"}, netip.MustParseAddrPort("127.0.0.1:9")},
		{"udp6", []string{"__udp6_lib_rcv", "udpv6_rcv"}, netip.MustParseAddrPort("[::1]:9")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ns := testutil.NewNS(t)
			r := startTrace(t, "--output-json", "--filter-netns", fmt.Sprint(ns.Inode), "udp")
			const n = 20
			sendUDP(t, ns, tc.network, tc.dst, n)
			r.stop(t, os.Interrupt)
			events, summary := parseNDJSON(t, r.stdout.Bytes())
			drops := 0
			for _, e := range events {
				if e["fate"] != "drop" {
					continue
				}
				drops++
				want := map[string]any{"source": "ebpf", "reason": "NO_SOCKET", "proto": "udp",
					"src": tc.dst.Addr().String(), "dst": tc.dst.Addr().String(), "dport": float64(tc.dst.Port()),
					"netns": float64(ns.Inode), "ifname": "lo"}
				for k, v := range want {
					if e[k] != v {
						t.Errorf("event %s = %v, want %v (event %v)", k, e[k], v, e)
					}
				}
				if fn := fate.Function(fmt.Sprint(e["location"])); !slices.Contains(tc.fns, fn) {
					t.Errorf("location %v, want in one of %v", e["location"], tc.fns)
				}
				if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e["time"])); err != nil {
					t.Errorf("time %v: %v", e["time"], err)
				}
			}
			if drops != n {
				t.Errorf("%d drops reported, want exactly %d", drops, n)
			}
			if br := summary["by_reason"].(map[string]any); br["NO_SOCKET"] != float64(n) {
				t.Errorf("summary by_reason = %v, want NO_SOCKET: %d", br, n)
			}
			checkNoLoss(t, summary)
		})
	}
}

// TestTraceFilterExcludes: the same traffic with a filter that excludes it
// gives no event at all, and a reason filter that excludes it likewise;
// SIGTERM ends the capture as cleanly as Ctrl-C.
func TestTraceFilterExcludes(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	for _, args := range [][]string{
		{"udp port 53"},
		{"--filter-reason", "NETFILTER_DROP"},
		{"--filter-fate", "consume", "udp"},
	} {
		r := startTrace(t, append([]string{"--output-json", "--filter-netns", fmt.Sprint(ns.Inode)}, args...)...)
		sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 5)
		r.stop(t, syscall.SIGTERM)
		events, summary := parseNDJSON(t, r.stdout.Bytes())
		for _, e := range events {
			if e["fate"] == "drop" {
				t.Errorf("%q: drop reported despite the filter: %v", args, e)
			}
		}
		if summary["drops"] != float64(0) {
			t.Errorf("%q: summary drops = %v, want 0", args, summary["drops"])
		}
	}
}

// TestTraceCountAndText: --count stops the capture by itself and the text
// output has its header, aligned lines and the summary.
func TestTraceCountAndText(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	r := startTrace(t, "--count", "3", "--filter-netns", fmt.Sprint(ns.Inode), "udp")
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 10)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pktfate exited with %v: %s", err, r.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("--count 3 did not stop the capture")
	}
	out := r.stdout.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], "REASON") {
		t.Fatalf("no header line: %q", out)
	}
	// The default line: the packet early, the reason, the function,
	// the interface without the namespace traced (the home one).
	got := 0
	for _, l := range lines {
		if strings.Contains(l, " drop    UDP 127.0.0.1:") && strings.Contains(l, " len 11 NO_SOCKET ") && strings.HasSuffix(l, " lo") {
			got++
			if len(l) > 120 {
				t.Errorf("line of %d columns: %q", len(l), l)
			}
		}
	}
	if got != 3 {
		t.Errorf("%d NO_SOCKET lines, want 3:\n%s", got, out)
	}
	for _, want := range []string{"3 events in", "drops by reason:", "NO_SOCKET", "lost events:", "ebpf_ringbuf_full", "nothing lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

// TestTraceIfnameFilter: --filter-ifname resolves the interface inside the
// namespace named by --filter-netns; packets on other interfaces are not
// reported.
func TestTraceIfnameFilter(t *testing.T) {
	testutil.RequireRoot(t)
	name := fmt.Sprintf("pktfate-test-%d", os.Getpid())
	ns, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, tc := range []struct {
		ifname string
		want   int
	}{{"lo", 4}, {"pfveth0", 0}} {
		if tc.ifname == "pfveth0" {
			if err := netns.Veth(ns, "pfveth0", ns, "pfveth1"); err != nil {
				t.Fatal(err)
			}
		}
		r := startTrace(t, "--output-json", "--filter-netns", name, "--filter-ifname", tc.ifname, "udp")
		sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 4)
		r.stop(t, os.Interrupt)
		_, summary := parseNDJSON(t, r.stdout.Bytes())
		if summary["drops"] != float64(tc.want) {
			t.Errorf("--filter-ifname %s: %v drops, want %d", tc.ifname, summary["drops"], tc.want)
		}
	}
}
