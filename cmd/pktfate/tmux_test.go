package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/testutil"
)

// tmux runs a command on a real terminal (a tmux pane, Debian's tmux) on
// a server of its own, and reads the screen back.
type tmux struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T, width, height int, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if testutil.InVM() != "" {
			t.Skip("the VMs carry no tmux; the host run checks the terminal")
		}
		t.Fatal("tmux is needed for the terminal tests (make deps installs it)")
	}
	m := &tmux{t: t, socket: fmt.Sprintf("pktfate-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)}
	// The shell stays after the command, so its last screen can be read;
	// Ctrl-C reaches the command, and the shell's trap outlives it.
	m.run("new-session", "-d", "-s", "t", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height),
		"sh", "-c", "trap true INT; "+command+`; echo "exit status $?"; sleep 600`)
	t.Cleanup(func() { exec.Command("tmux", "-L", m.socket, "kill-server").Run() })
	return m
}

func (m *tmux) run(args ...string) string {
	m.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", m.socket}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// screen returns what the pane shows.
func (m *tmux) screen() string { return m.run("capture-pane", "-p", "-t", "t") }

// waitFor polls the screen until ok holds, and returns it.
func (m *tmux) waitFor(what string, ok func(string) bool) string {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := m.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("the terminal never showed %s:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTopTerminal: pktfate top on a terminal redraws a table of drops by
// reason, location and hook with totals and rates; after known traffic
// it shows exactly those drops, and Ctrl-C leaves the last table and the
// summary on the screen.
func TestTopTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	ns, name := namedNS(t, "pktfate-top-")
	if _, err := ns.Exec(t.Context(), "table inet t {\n chain c {\n  type filter hook input priority 0;\n  udp dport 99 drop\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	m := newTmux(t, 150, 80, fmt.Sprintf("%s top --ready-file %s --interval 200ms --filter-netns %s udp", pktfateBinary(t), ready, name))
	waitFile(t, ready)
	m.waitFor("the table", func(s string) bool { return strings.Contains(s, "DROPS/s") && strings.Contains(s, "(no drops yet)") })
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 7)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:99"), 3)
	row := func(reason, hook string, n int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^ +[0-9.]+ +%d  %s +\S+\+0x[0-9a-f]+ *%s$`, n, reason, hook))
	}
	noSocket, nfDrop := row("NO_SOCKET", "", 7), row("NETFILTER_DROP", "ipv4 LOCAL_IN", 3)
	s := m.waitFor("7 NO_SOCKET and 3 LOCAL_IN drops", func(s string) bool {
		return noSocket.MatchString(s) && nfDrop.MatchString(s) && strings.Contains(s, "drops 10 (")
	})
	if strings.Count(s, "pktfate top ") != 1 {
		t.Errorf("the table is not redrawn in place:\n%s", s)
	}
	// Rates fall back to zero once the traffic stops.
	m.waitFor("rates back to 0", func(s string) bool {
		return regexp.MustCompile(`(?m)^ +0\.0 +7  NO_SOCKET`).MatchString(s) && strings.Contains(s, "drops 10 (0.0/s)")
	})
	m.run("send-keys", "-t", "t", "C-c")
	s = m.waitFor("the summary after Ctrl-C", func(s string) bool { return strings.Contains(s, "exit status 0") })
	for _, want := range []string{"drops by reason:", "complete: nothing lost", "DROPS/s"} {
		if !strings.Contains(s, want) {
			t.Errorf("after Ctrl-C the screen lacks %q:\n%s", want, s)
		}
	}
	if !noSocket.MatchString(s) {
		t.Errorf("the last table is gone:\n%s", s)
	}
}

// TestStatusLineTerminal: trace's live status line on a terminal counts
// the drops as their fate records come out, with quiet traffic (two
// observers: the drop is counted when its record is), and never mixes
// with the packet lines written to the same terminal.
func TestStatusLineTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	ns, name := namedNS(t, "pktfate-sl-")
	dir := t.TempDir()
	ready, out := filepath.Join(dir, "ready"), filepath.Join(dir, "out.txt")
	m := newTmux(t, 150, 40, fmt.Sprintf("%s trace --ready-file %s --filter-netns %s udp > %s", pktfateBinary(t), ready, name, out))
	waitFile(t, ready)
	m.waitFor("the status line", func(s string) bool { return strings.Contains(s, "events 0  drops 0  lost 0  (Ctrl-C to stop)") })
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 7)
	m.waitFor("7 drops", func(s string) bool { return strings.Contains(s, "drops 7  lost 0  (Ctrl-C to stop)") })
	m.run("send-keys", "-t", "t", "C-c")
	s := m.waitFor("the end", func(s string) bool { return strings.Contains(s, "exit status 0") })
	if strings.Contains(s, "Ctrl-C to stop") {
		t.Errorf("the status line stays after the end:\n%s", s)
	}

	// Packet lines on the same terminal: the status line is erased before
	// each write and drawn again below.
	ready2 := filepath.Join(dir, "ready2")
	m2 := newTmux(t, 150, 40, fmt.Sprintf("%s trace --ready-file %s --filter-netns %s udp", pktfateBinary(t), ready2, name))
	waitFile(t, ready2)
	sendUDP(t, ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), 3)
	s = m2.waitFor("3 packet lines and the status line", func(s string) bool {
		return strings.Count(s, " NO_SOCKET ") == 3 && strings.Contains(s, "drops 3  lost 0")
	})
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for _, l := range lines {
		if strings.Contains(l, "NO_SOCKET") && strings.Contains(l, "Ctrl-C") {
			t.Errorf("a packet line mixed with the status line: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "events ") {
		t.Errorf("the status line is not the last line: %q\n%s", last, s)
	}
	m2.run("send-keys", "-t", "t", "C-c")
	m2.waitFor("the end", func(s string) bool { return strings.Contains(s, "exit status 0") })
}
