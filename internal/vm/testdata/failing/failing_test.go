// Package failing is a deliberately failing test package: the harness test
// (internal/vm, TestHarnessReportsFailure) runs it through the real VM
// harness to prove that a failing test makes the kernel's line FAIL and
// the command exit non-zero, and that -run selects tests.
package failing

import (
	"os"
	"testing"
)

func TestPasses(t *testing.T) {
	if os.Getenv("PKTFATE_VM") == "" {
		t.Fatal("PKTFATE_VM is unset: not running under the VM harness")
	}
	if _, err := os.Stat("testdata/marker.txt"); err != nil {
		t.Fatalf("relative testdata path does not work in the guest: %v", err)
	}
}

func TestFails(t *testing.T) {
	t.Fatal("deliberate failure (pktfate VM harness test)")
}
