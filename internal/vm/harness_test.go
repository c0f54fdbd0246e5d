package vm

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// onHost skips a test that drives QEMU unless it runs on the host with
// QEMU installed (inside the VMs PKTFATE_VM is set and there is no QEMU).
func onHost(t *testing.T) {
	t.Helper()
	if v := os.Getenv(GuestEnv.VM); v != "" {
		t.Skipf("inside the %s VM: the harness runs on the host only", v)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed: cannot run the VM harness")
	}
}

// runVMTest builds and runs the vmtest command from the repo root and
// returns its output and exit code.
func runVMTest(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Join("..", "..")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("running vmtest: %v\n%s", err, out.String())
	return "", -1
}

var verdictRE = regexp.MustCompile(`(?m)^(PASS|FAIL) kernel=(\S+)$`)

// TestHarnessReportsFailure runs the real harness (download, initramfs,
// QEMU) on one kernel with the deliberately failing package in
// testdata/failing: selecting its passing test must give PASS and exit 0;
// running all of it must give FAIL, exit non-zero and no retry (a failed
// test is not a VM failure).
func TestHarnessReportsFailure(t *testing.T) {
	onHost(t)
	line := os.Getenv("PKTFATE_VM_HARNESS_KERNEL")
	if line == "" {
		line = "6.1"
	}
	bin := filepath.Join(t.TempDir(), "vmtest")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/vmtest").CombinedOutput(); err != nil {
		t.Fatalf("building vmtest: %v\n%s", err, out)
	}
	common := []string{"-kernel", line, "-pkg", "./internal/vm/testdata/failing", "-kmod", "none", "-timeout", "5m"}

	t.Run("passing test passes", func(t *testing.T) {
		out, code := runVMTest(t, bin, append(common, "-run", "^TestPasses$")...)
		verdicts := verdictRE.FindAllStringSubmatch(out, -1)
		if code != 0 || len(verdicts) != 1 || verdicts[0][1] != "PASS" {
			t.Fatalf("exit %d, verdicts %q; want exit 0 and one PASS line\n%s", code, verdicts, out)
		}
		if !strings.HasPrefix(verdicts[0][2], line+".") {
			t.Errorf("verdict names kernel %s, want a %s release", verdicts[0][2], line)
		}
		if !strings.Contains(out, "--- PASS: TestPasses") || strings.Contains(out, "TestFails") {
			t.Errorf("-run not passed through to the test binary:\n%s", out)
		}
	})
	t.Run("failing test fails", func(t *testing.T) {
		out, code := runVMTest(t, bin, common...)
		verdicts := verdictRE.FindAllStringSubmatch(out, -1)
		if code == 0 || len(verdicts) != 1 || verdicts[0][1] != "FAIL" {
			t.Fatalf("exit %d, verdicts %q; want non-zero exit and one FAIL line\n%s", code, verdicts, out)
		}
		if !strings.Contains(out, "--- FAIL: TestFails") || !strings.Contains(out, "deliberate failure") {
			t.Errorf("test output not streamed:\n%s", out)
		}
		if strings.Contains(out, "retrying") {
			t.Errorf("a failed test made the harness retry:\n%s", out)
		}
		if !strings.Contains(out, "["+line+"] ") {
			t.Errorf("console lines are not prefixed with [%s]:\n%s", line, out)
		}
	})
}
