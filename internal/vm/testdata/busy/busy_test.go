// Package busy checks, inside the harness's VM, that vmtest -busy N runs N
// CPU-burning processes beside the tests and tells them PKTFATE_VM_BUSY=N.
// The harness test TestHarnessBusyGuest (internal/vm) runs it; it lives
// under testdata so that the matrix (./...) never does.
package busy

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// busyProcs returns the pids of the guest's busy loops (/pktfate/busy.sh).
func busyProcs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(cmdline), "/pktfate/busy.sh") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// ticks is a process's user+system time in clock ticks.
func ticks(t *testing.T, pid string) uint64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

func TestBusyGuest(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("PKTFATE_VM_BUSY"))
	if err != nil || n < 1 {
		t.Fatalf("PKTFATE_VM_BUSY = %q, want the -busy count", os.Getenv("PKTFATE_VM_BUSY"))
	}
	pids := busyProcs(t)
	if len(pids) != n {
		t.Fatalf("%d busy processes (%v), want %d", len(pids), pids, n)
	}
	for _, pid := range pids {
		start := ticks(t, pid)
		deadline := time.Now().Add(60 * time.Second)
		for ticks(t, pid)-start < 10 {
			if time.Now().After(deadline) {
				t.Fatalf("busy process %s used no CPU for 60 s", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
