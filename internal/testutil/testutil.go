// Package testutil holds helpers shared by pktfate's tests.
package testutil

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/internal/netns"
	"golang.org/x/sys/unix"
)

// InVM returns the kernel line ("6.1", "6.12", "7.2") when the test runs
// inside the kernel-matrix VM, or "".
func InVM() string { return os.Getenv("PKTFATE_VM") }

// RequireRoot fails the test when not running as root inside the VM matrix
// (where root is guaranteed) and skips it elsewhere: privileged tests need
// root to load BPF and create network namespaces.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InVM() != "" {
		tb.Fatal("not root inside the VM")
	}
	tb.Skip("privileged test: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
}

// NewNS creates an anonymous network namespace with loopback up, removed
// when the test ends.
func NewNS(tb testing.TB) *netns.NS {
	tb.Helper()
	ns, err := netns.New("")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Error(err)
		}
	})
	return ns
}

// ReadHex reads a hex fixture: hex digits with any spacing, "#" starting
// a comment to the end of the line.
func ReadHex(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(f), "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return b
}

// Mallocs counts the heap allocations of n runs of f, exactly:
// testing.AllocsPerRun rounds the average down to an integer, which hides
// an allocation every few runs.
// Under the race detector allocation counts mean nothing: callers skip
// (see RequireNoRace).
func Mallocs(n int, f func()) uint64 {
	// One P, as testing.AllocsPerRun does: no other goroutine allocates
	// while f runs.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// RequireNoRace skips a test whose claim the race detector's
// instrumentation changes (allocation counts): the plain run of the same
// test binary makes the claim (make test runs both).
func RequireNoRace(tb testing.TB) {
	tb.Helper()
	if Race {
		tb.Skip("allocation counts are not meaningful under the race detector; the plain run checks them")
	}
}

// LockScenarios holds, until the test ends, a lock that every test running
// the scenario library takes (internal/scenario's runner tests, cmd/pktfate's
// check tests), so that two packages tested at once do not run scenarios at
// the same time. A packet whose skb names no namespace (a TCP SYN a
// listener consumes, a datagram queued on a socket) is placed by the
// interface it arrived on, and the scenarios' namespaces all number their
// veths alike: one package's SYN would be taken for the other's.
func LockScenarios(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "pktfate-scenarios.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() }) // closing releases the lock
}
