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

// verdictRE matches a line's verdict: "PASS kernel=R", "PASS kernel=R
// (after 1 retry: ...)", "FAIL kernel=R why".
var verdictRE = regexp.MustCompile(`(?m)^(PASS|FAIL) kernel=(\S+)(?: (.*))?$`)

// TestHarnessReportsFailure runs the real harness (download, initramfs,
// QEMU) on one kernel with the deliberately failing package in
// testdata/failing: selecting its passing test must give PASS and exit 0;
// running all of it must give FAIL, exit non-zero and no retry (a failed
// test is not a VM failure).
func TestHarnessReportsFailure(t *testing.T) {
	onHost(t)
	line := harnessLine()
	bin := buildVMTest(t)
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
		// A clean boot shows no kernel error: the console's log level
		// lets warnings through, and none may be mistaken for an error.
		if strings.Contains(out, "KERNEL ERROR") || strings.Contains(out, "RETRY") {
			t.Errorf("a clean boot reported kernel errors or retried:\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^result: ` + regexp.QuoteMeta(line) + ` +\S+: PASS$`).MatchString(out) {
			t.Errorf("summary lacks a plain PASS result line for %s:\n%s", line, out)
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
		if strings.Contains(out, "RETRY") {
			t.Errorf("a failed test made the harness retry:\n%s", out)
		}
		if !strings.Contains(out, "["+line+"] ") {
			t.Errorf("console lines are not prefixed with [%s]:\n%s", line, out)
		}
	})
}

// harnessLine is the kernel line the harness's own VM tests boot.
func harnessLine() string {
	if l := os.Getenv("PKTFATE_VM_HARNESS_KERNEL"); l != "" {
		return l
	}
	return "6.1"
}

func buildVMTest(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vmtest")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/vmtest").CombinedOutput(); err != nil {
		t.Fatalf("building vmtest: %v\n%s", err, out)
	}
	return bin
}

// TestHarnessFailsOnKernelErrors boots one kernel with the tests in
// testdata/kernelerror, which make the kernel WARN and oops (BUG()) through
// testdata/warnmod while the tests themselves pass: the line must FAIL,
// the command exit non-zero, both reports be quoted in the output and the
// summary, and the boot not be retried.
func TestHarnessFailsOnKernelErrors(t *testing.T) {
	onHost(t)
	line := harnessLine()
	bin := buildVMTest(t)
	out, code := runVMTest(t, bin, "-kernel", line, "-pkg", "./internal/vm/testdata/kernelerror",
		"-kmod", "internal/vm/testdata/warnmod", "-timeout", "5m")
	verdicts := verdictRE.FindAllStringSubmatch(out, -1)
	if code == 0 || len(verdicts) != 1 || verdicts[0][1] != "FAIL" {
		t.Fatalf("exit %d, verdicts %q; want non-zero exit and one FAIL line\n%s", code, verdicts, out)
	}
	if !strings.Contains(out, "--- PASS: TestKernelWarns") || !strings.Contains(out, "--- PASS: TestKernelOopses") {
		t.Fatalf("the guest tests did not pass (they must: only the kernel's reports fail the line):\n%s", out)
	}
	if !strings.Contains(verdicts[0][3], "2 kernel errors (warning, bug)") {
		t.Errorf("verdict %q does not name the warning and the BUG", verdicts[0][0])
	}
	for _, re := range []string{
		`\[` + regexp.QuoteMeta(line) + `\] KERNEL ERROR \(boot 1\): kernel warning: .*WARNING: CPU: \d+ PID: \d+ at .*warnmod`,
		`\[` + regexp.QuoteMeta(line) + `\]     \| .*pktfate warnmod: deliberate warning`,
		`\[` + regexp.QuoteMeta(line) + `\] KERNEL ERROR \(boot 1\): kernel bug: .*kernel BUG at .*warnmod\.c:\d+!`,
		`(?m)^result: ` + regexp.QuoteMeta(line) + ` +\S+: FAIL: 2 kernel errors \(warning, bug\)`,
		`(?m)^result: ` + regexp.QuoteMeta(line) + ` +  kernel warning: .*WARNING: CPU:`,
		`(?m)^result: ` + regexp.QuoteMeta(line) + ` +  kernel bug: .*kernel BUG at`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "RETRY") {
		t.Errorf("a boot with kernel errors was retried:\n%s", out)
	}
}

// TestHarnessBusyGuest boots one kernel with -busy 2: the guest test in
// testdata/busy finds two busy loops using CPU and PKTFATE_VM_BUSY=2.
func TestHarnessBusyGuest(t *testing.T) {
	onHost(t)
	line := harnessLine()
	out, code := runVMTest(t, buildVMTest(t), "-kernel", line, "-pkg", "./internal/vm/testdata/busy", "-kmod", "none", "-busy", "2", "-timeout", "5m")
	verdicts := verdictRE.FindAllStringSubmatch(out, -1)
	if code != 0 || len(verdicts) != 1 || verdicts[0][1] != "PASS" || !strings.Contains(out, "--- PASS: TestBusyGuest") {
		t.Fatalf("exit %d, verdicts %q; want exit 0, one PASS and TestBusyGuest passed\n%s", code, verdicts, out)
	}
	if !strings.Contains(out, "pktfate-vm: 2 busy processes running beside the tests") {
		t.Errorf("the guest did not announce its busy processes:\n%s", out)
	}
}
