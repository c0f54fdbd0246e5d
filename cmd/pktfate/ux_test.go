package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// packetLines returns the lines before the summary (the header and the
// packets) of text output.
func packetLines(out string) []string {
	head, _, _ := strings.Cut(out, "\n\n")
	if head == "" {
		return nil
	}
	return strings.Split(head, "\n")
}

// namedNS creates a namespace bound under /run/netns, removed at the end.
func namedNS(t *testing.T, prefix string) (*netns.NS, string) {
	t.Helper()
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e6)
	ns, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns, name
}

// TestSourceNotices: a source this kernel cannot run is named in one short
// line, the reason in words; -v adds the detail on a line of its own; the
// summary names each missing source once.
func TestSourceNotices(t *testing.T) {
	testutil.RequireRoot(t)
	out, errOut, err := runPktfate(t, "trace", "--duration", "100ms", "udp port 9")
	if err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	notices := 0
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.Contains(l, " not running: ") {
			notices++
			if len(l) > 100 || strings.Contains(l, "netlink receive") {
				t.Errorf("notice too long or in jargon: %q", l)
			}
		}
	}
	var missing []string
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(l, "  "); ok && strings.Contains(name, " not running: ") {
			missing = append(missing, strings.Fields(name)[0])
		}
	}
	if notices != len(missing) {
		t.Errorf("%d notices, %d missing sources in the summary:\n%s\n%s", notices, len(missing), errOut, out)
	}
	for _, m := range missing {
		if strings.Count(out, m+" not running") != 1 {
			t.Errorf("the summary names %s %d times:\n%s", m, strings.Count(out, m+" not running"), out)
		}
	}
	if testutil.InVM() == "" {
		// The host has neither NET_DM nor the module: say so in words.
		for _, want := range []string{"pktfate: kmod not running: the pktfate kernel module is not loaded\n",
			"pktfate: dropmon not running: this kernel has no drop monitor (NET_DM)\n"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut)
			}
		}
		_, errOut, err = runPktfate(t, "trace", "-v", "--duration", "100ms", "udp port 9")
		if err != nil || !strings.Contains(errOut, "pktfate: kmod not running: the pktfate kernel module is not loaded\npktfate:   generic netlink family pktfate not registered") {
			t.Errorf("-v gives no detail: %v\n%s", err, errOut)
		}
	}
}

// TestFilterReasonOnly: --filter-reason shows the drops with that reason
// and nothing else: neither other drops nor delivered packets.
func TestFilterReasonOnly(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := startTrace(t, "--output-json", "--filter-netns", fmt.Sprint(ns.Inode), "--filter-reason", "no_socket", "udp")
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 3)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:4000"), 3)
	buf := make([]byte, 100)
	for range 3 {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := conn.ReadFromUDP(buf); err != nil {
			t.Fatal(err)
		}
	}
	r.stop(t, os.Interrupt)
	events, fates, summary := parseOutput(t, r.stdout.Bytes())
	for _, l := range append(events, fates...) {
		if l["fate"] != "drop" || l["reason"] != "NO_SOCKET" {
			t.Errorf("shown despite --filter-reason NO_SOCKET: %v", l)
		}
	}
	if summary["drops"] != float64(3) || summary["consumed"] != float64(0) {
		t.Errorf("summary: %v drops, %v consumed; want 3 and 0", summary["drops"], summary["consumed"])
	}
}

// TestReportPackets: pktfate report --packets lists a capture's packets as
// trace printed them, from the pcapng and the recording alike; NDJSON,
// from a file or stdin, lists the same packets as the pcapng of the same
// run; a filter expression limits the list.
func TestReportPackets(t *testing.T) {
	testutil.RequireRoot(t)
	ns, _ := namedNS(t, "pktfate-rl-")
	dir := t.TempDir()
	text, pcap, rec := filepath.Join(dir, "live.txt"), filepath.Join(dir, "cap.pcapng"), filepath.Join(dir, "cap.rec")
	// By port, not namespace: the home namespace is pktfate's own, as for
	// report, so lines name the test's namespace both times.
	const port = 47127
	r := startTrace(t, "--utc", "--output-file", text, "-w", pcap, "--record", rec, fmt.Sprintf("udp port %d", port))
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port)), 4)
	sendUDP(t, ns, "udp6", netip.MustParseAddrPort(fmt.Sprintf("[::1]:%d", port)), 2)
	r.stop(t, os.Interrupt)
	b, err := os.ReadFile(text)
	if err != nil {
		t.Fatal(err)
	}
	live := packetLines(string(b))
	if len(live) != 7 || !strings.Contains(live[1], "@pktfate-rl-") {
		t.Fatalf("live text:\n%s", b)
	}
	for _, f := range []string{pcap, rec} {
		out, errOut, err := runPktfate(t, "report", "-l", "--utc", f)
		if err != nil && !strings.Contains(f, ".rec") { // a recording's losses are unknown: exit 4
			t.Errorf("report -l %s: %v %s", f, err, errOut)
		}
		if got := packetLines(out); strings.Join(got, "\n") != strings.Join(live, "\n") {
			t.Errorf("report -l %s lists\n%s\nwant what trace printed\n%s", filepath.Base(f), strings.Join(got, "\n"), strings.Join(live, "\n"))
		}
		if strings.HasSuffix(f, ".rec") && !strings.Contains(out, "is a recording (trace --record)") {
			t.Errorf("a recording not named as one:\n%s", out)
		}
	}
	out, _, err := runPktfate(t, "report", "-l", "--utc", pcap, "ip6")
	if err != nil || len(packetLines(out)) != 3 || !strings.Contains(out, "2 of 6 packets listed (ip6)") {
		t.Errorf("report -l ip6: %v\n%s", err, out)
	}

	// NDJSON and pcapng of one run; NDJSON from stdin.
	ndjson, pcapng := captureFiles(t, os.Interrupt, 5)
	fromPcap, _, err := runPktfate(t, "report", "-l", "--utc", pcapng)
	if err != nil {
		t.Fatal(err)
	}
	fromND, _, err := runPktfate(t, "report", "-l", "--utc", ndjson)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pktfateBinary(t), "report", "-l", "--utc", "-")
	f, err := os.Open(ndjson)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdin = f
	fromStdin, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// A packet pktfate did not decode shows its length: the pcapng keeps
	// what was captured of it, NDJSON the kernel's skb->len; compare the
	// decoded ones.
	decoded := func(out string) string {
		var keep []string
		for _, l := range packetLines(out) {
			if !strings.Contains(l, " len ") || strings.Contains(l, " UDP ") || strings.Contains(l, " ICMP") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	want := decoded(fromPcap)
	if strings.Count(want, " NO_SOCKET ") != 7 || strings.Count(want, " NETFILTER_DROP ") != 3 {
		t.Errorf("pcapng listing:\n%s", fromPcap)
	}
	for name, got := range map[string]string{"NDJSON": fromND, "stdin": string(fromStdin)} {
		if decoded(got) != want {
			t.Errorf("%s lists\n%s\nthe pcapng\n%s", name, got, fromPcap)
		}
	}
	out, _, err = runPktfate(t, "report", "-l", pcapng, "udp port 99")
	if err != nil || len(packetLines(out)) != 4 || strings.Count(strings.Join(packetLines(out), "\n"), " NETFILTER_DROP ") != 3 || !strings.Contains(out, "\n3 of ") ||
		!strings.Contains(out, " packets listed (udp port 99); the summary is the whole capture's\n") {
		t.Errorf("report -l 'udp port 99': %v\n%s", err, out)
	}
}

// TestOutputsOwnedBySudoUser: under sudo, the files trace creates belong
// to the user who ran sudo (mode 0600), so that user's Wireshark opens
// them; a file that existed keeps its owner.
func TestOutputsOwnedBySudoUser(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	nd, pcap, rec, kept := filepath.Join(dir, "c.ndjson"), filepath.Join(dir, "c.pcapng"), filepath.Join(dir, "c.rec"), filepath.Join(dir, "kept.pcapng")
	if err := os.WriteFile(kept, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--output-json", "--output-file", nd, "-w", pcap, "--record", rec},
		{"-w", kept},
	} {
		cmd := exec.Command(pktfateBinary(t), append([]string{"trace", "--duration", "100ms"}, append(args, "udp port 9")...)...)
		cmd.Env = append(os.Environ(), "SUDO_UID=65534", "SUDO_GID=65533")
		if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(strings.Join(args, " "), "--record") {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	for path, uid := range map[string]uint32{nd: 65534, pcap: 65534, rec: 65534, kept: 0} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		wantGid := uint32(65533)
		if uid == 0 {
			wantGid = 0
		}
		if sys.Uid != uid || sys.Gid != wantGid || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d 0600", filepath.Base(path), sys.Uid, sys.Gid, st.Mode().Perm(), uid, wantGid)
		}
	}
}

// TestDemoJSON: pktfate demo --output-json writes NDJSON only on stdout;
// its banner and table go to stderr.
func TestDemoJSON(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("the demo needs nft (nftables)")
	}
	out, errOut, err := runPktfate(t, "demo", "--output-json", "--timeout", "30s")
	if err != nil {
		t.Fatalf("demo: %v: %s", err, errOut)
	}
	parseOutput(t, []byte(out)) // every line NDJSON, the summary last
	if !strings.Contains(errOut, "what happened to each packet:") || !strings.Contains(errOut, "pktfate demo: client") {
		t.Errorf("the demo's banner and table are not on stderr: %s", errOut)
	}
}

// TestFilterSeveralNetns: --filter-netns repeated keeps the packets of
// each namespace named (by name, by inode) and no other; lines name the
// namespace of each packet.
func TestFilterSeveralNetns(t *testing.T) {
	testutil.RequireRoot(t)
	a, nameA := namedNS(t, "pktfate-ma-")
	b, nameB := namedNS(t, "pktfate-mb-")
	c := testutil.NewNS(t)
	r := startTrace(t, "--utc", "--filter-netns", nameA, "--filter-netns", fmt.Sprint(b.Inode), "udp")
	sendUDP(t, a, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 2)
	sendUDP(t, b, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 3)
	sendUDP(t, c, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 4)
	r.stop(t, os.Interrupt)
	out := r.stdout.String()
	lines := strings.Join(packetLines(out), "\n") + "\n"
	for name, want := range map[string]int{nameA: 2, nameB: 3} {
		if got := strings.Count(lines, " lo@"+name+"\n"); got != want {
			t.Errorf("%d lines of %s, want %d:\n%s", got, name, want, out)
		}
	}
	if strings.Count(lines, " NO_SOCKET ") != 5 || !strings.Contains(out, "5 dropped") {
		t.Errorf("packets of the third namespace shown, or some lost:\n%s", out)
	}
	if testutil.InVM() == "" && !strings.Contains(r.stderr.String(), "dropmon not running") {
		t.Errorf("stderr: %s", r.stderr.String())
	}
}

// TestTopNotTerminal: off a terminal pktfate top prints one table after
// the other, no escape sequences, then the summary.
func TestTopNotTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command(pktfateBinary(t), "top", "--ready-file", ready, "--interval", "100ms", "--filter-netns", fmt.Sprint(ns.Inode), "udp")
	var o lockedBuffer
	var e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFile(t, ready)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 4)
	counted := regexp.MustCompile(`(?m)^ +[0-9.]+ +4  NO_SOCKET `)
	for deadline := time.Now().Add(60 * time.Second); !counted.MatchString(o.String()); {
		if time.Now().After(deadline) {
			t.Fatalf("no table counts the 4 drops:\n%s", o.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("top: %v: %s", err, e.String())
	}
	out := o.String()
	if strings.Contains(out, "\033") || strings.Count(out, "pktfate top ") < 2 || !strings.Contains(out, "drops by reason:") {
		t.Errorf("off a terminal:\n%q", out)
	}
	last := out[strings.LastIndex(out, "pktfate top "):]
	if !counted.MatchString(last) {
		t.Errorf("the last table does not count the 4 drops:\n%s", last)
	}
}

// lockedBuffer is a buffer a process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
