// Package kernelerror makes the guest kernel report errors on purpose
// (a WARN, and an oops through BUG()) with the module in
// internal/vm/testdata/warnmod, while its own tests pass: the harness test
// TestHarnessFailsOnKernelErrors (internal/vm) proves that the harness
// fails the line anyway and quotes the reports. It lives under testdata so
// that the matrix (./...) never runs it.
package kernelerror

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func module(t *testing.T) string {
	t.Helper()
	if os.Getenv("PKTFATE_VM") == "" {
		t.Skip("makes the kernel warn and oops on purpose: only inside the harness's VM")
	}
	p := filepath.Join(os.Getenv("PKTFATE_KMOD_DIR"), "warnmod.ko")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("warnmod.ko not built for this kernel (vmtest -kmod internal/vm/testdata/warnmod): %v", err)
	}
	return p
}

// TestKernelWarns loads warnmod with what=warn: the load succeeds and the
// kernel prints a WARNING; the test itself passes.
func TestKernelWarns(t *testing.T) {
	f, err := os.Open(module(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "what=warn", 0); err != nil {
		t.Fatalf("loading warnmod: %v", err)
	}
	if err := unix.DeleteModule("warnmod", 0); err != nil {
		t.Errorf("unloading warnmod: %v", err)
	}
}

// TestKernelOopses has insmod (another process, which the oops kills) load
// warnmod with what=bug; the test passes when insmod died.
func TestKernelOopses(t *testing.T) {
	out, err := exec.Command("insmod", module(t), "what=bug").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("insmod what=bug: %v (%s); want it killed by the oops", err, out)
	}
	t.Logf("insmod died as expected: %v", err)
}
