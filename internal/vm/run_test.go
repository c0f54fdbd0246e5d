package vm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeBoots returns a boot function replaying results, counting calls.
func fakeBoots(calls *int, results ...BootResult) func(context.Context, BootSpec) (BootResult, error) {
	return func(context.Context, BootSpec) (BootResult, error) {
		*calls++
		if *calls > len(results) {
			return BootResult{}, errors.New("unexpected boot")
		}
		return results[*calls-1], nil
	}
}

var (
	warnReport  = KernelError{Kind: KindWarning, Headline: "[   12.3] WARNING: CPU: 1 PID: 231 at warnmod.c:19 warnmod_init+0x15/0x30 [warnmod]", Context: []string{"[   12.3] RIP: 0010:warnmod_init+0x15/0x30 [warnmod]"}}
	oopsReport  = KernelError{Kind: KindOops, Headline: "[   20.1] BUG: kernel NULL pointer dereference, address: 0000000000000000"}
	panicReport = KernelError{Kind: KindPanic, Headline: "[   30.1] Kernel panic - not syncing: Fatal exception"}
)

func TestBootRetriesOnlyUnreportedVMs(t *testing.T) {
	tests := []struct {
		name    string
		retries int
		results []BootResult
		calls   int
		rc      int
		wantErr string // substring of the error, "" for none
		pass    bool
		verdict string // substring of the line's verdict
		errs    []KernelErrorKind
	}{
		{name: "pass", retries: 1, results: []BootResult{{Reported: true}}, calls: 1, pass: true, verdict: "PASS"},
		{name: "failed test is not retried", retries: 1, results: []BootResult{{Reported: true, RC: 1}}, calls: 1, rc: 1,
			verdict: "FAIL: tests failed (guest status 1)"},
		{name: "lost marker retried once, named in the verdict", retries: 1,
			results: []BootResult{{Tail: []string{"[ 9.1] reboot: Power down", ""}}, {Reported: true}}, calls: 2, pass: true,
			verdict: `PASS (after 1 retry: boot 1: qemu exited without a result marker (last console line: "[ 9.1] reboot: Power down"))`},
		{name: "two lost markers fail", retries: 1, results: []BootResult{{}, {}}, calls: 2,
			wantErr: "VM did not report a result: boot 2: qemu exited", verdict: "after 1 retry: boot 1"},
		{name: "no retries allowed", retries: 0, results: []BootResult{{}}, calls: 1, wantErr: "boot 1: qemu exited"},
		{name: "hang is not retried", retries: 1, results: []BootResult{{TimedOut: true, Tail: []string{"=== RUN   TestStuck"}}}, calls: 1,
			wantErr: `VM hung: no result within 1m0s and no kernel error on the console (last line: "=== RUN   TestStuck")`},
		{name: "warning with passing tests fails", retries: 1, results: []BootResult{{Reported: true, KernelErrors: []KernelError{warnReport}}}, calls: 1,
			verdict: "FAIL: 1 kernel error (warning)", errs: []KernelErrorKind{KindWarning}},
		{name: "oops and failed tests", retries: 1, results: []BootResult{{Reported: true, RC: 1, KernelErrors: []KernelError{oopsReport}}}, calls: 1, rc: 1,
			verdict: "FAIL: 1 kernel error (oops); tests failed (guest status 1)", errs: []KernelErrorKind{KindOops}},
		{name: "panic without marker is not retried", retries: 1, results: []BootResult{{KernelErrors: []KernelError{oopsReport, panicReport}}}, calls: 1,
			wantErr: "VM did not report a result after a kernel error", verdict: "FAIL: 2 kernel errors (oops, panic)", errs: []KernelErrorKind{KindOops, KindPanic}},
		{name: "retried boot's warning fails the line", retries: 1, results: []BootResult{{}, {Reported: true, KernelErrors: []KernelError{warnReport}}}, calls: 2,
			verdict: "FAIL: 1 kernel error (warning); after 1 retry: boot 1", errs: []KernelErrorKind{KindWarning}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			calls := 0
			r := &runner{cfg: Config{Timeout: time.Minute, Retries: tt.retries}, out: &syncWriter{w: &out}, bootVM: fakeBoots(&calls, tt.results...)}
			res := lineResult{line: Line{Name: "6.1"}, release: "6.1.0-1-amd64"}
			err := r.boot(context.Background(), Line{Name: "6.1"}, Kernel{Release: "6.1.0-1-amd64"}, "initrd", &res)
			res.err = err
			if calls != tt.calls || res.rc != tt.rc {
				t.Errorf("calls=%d rc=%d; want calls=%d rc=%d", calls, res.rc, tt.calls, tt.rc)
			}
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if res.passed() != tt.pass {
				t.Errorf("passed = %v, want %v", res.passed(), tt.pass)
			}
			if v := res.verdict(); !strings.Contains(v, tt.verdict) || strings.HasPrefix(v, "PASS") != tt.pass {
				t.Errorf("verdict = %q, want it to contain %q", v, tt.verdict)
			}
			var kinds []KernelErrorKind
			for _, e := range res.kernelErrors {
				kinds = append(kinds, e.Kind)
			}
			if !equalKinds(kinds, tt.errs) {
				t.Errorf("kernel errors %v, want %v", kinds, tt.errs)
			}
			retried := strings.Contains(out.String(), "RETRY: boot 1: qemu exited without a result marker")
			if retried != (tt.calls == 2) {
				t.Errorf("retry notice printed=%v, want %v:\n%s", retried, tt.calls == 2, out.String())
			}
			// Every kernel error is quoted in the output, context included.
			for _, e := range res.kernelErrors {
				if !strings.Contains(out.String(), "[6.1] KERNEL ERROR (boot "+map[bool]string{true: "2", false: "1"}[tt.calls == 2]+"): "+e.String()) {
					t.Errorf("kernel error %v not quoted:\n%s", e, out.String())
				}
				for _, c := range e.Context {
					if !strings.Contains(out.String(), "[6.1]     | "+c) {
						t.Errorf("context line %q not quoted:\n%s", c, out.String())
					}
				}
			}
		})
	}
}

func equalKinds(a, b []KernelErrorKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSummaryNamesRetriesAndKernelErrors(t *testing.T) {
	var out bytes.Buffer
	r := &runner{out: &syncWriter{w: &out}}
	results := []lineResult{
		{line: Line{Name: "6.1"}, release: "6.1.0-50-amd64"},
		{line: Line{Name: "6.12"}, release: "6.12.95+deb12-amd64", retries: []string{"boot 1: qemu exited without a result marker (last console line: \"x\")"}},
		{line: Line{Name: "7.2"}, release: "7.2.13+deb14-amd64", kernelErrors: []KernelError{warnReport, oopsReport}},
	}
	err := r.summary(results)
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "7.2.13+deb14-amd64") || strings.Contains(err.Error(), "6.12") {
		t.Errorf("summary error = %v, want ErrFailed naming only 7.2", err)
	}
	for _, want := range []string{
		"result: 6.1   6.1.0-50-amd64: PASS\n",
		"result: 6.12  6.12.95+deb12-amd64: PASS (after 1 retry: boot 1: qemu exited without a result marker",
		"result: 7.2   7.2.13+deb14-amd64: FAIL: 2 kernel errors (warning, oops)\n",
		"result: 7.2     " + warnReport.String() + "\n",
		"result: 7.2     " + oopsReport.String() + "\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	// A retried pass alone does not fail the run.
	out.Reset()
	if err := r.summary(results[:2]); err != nil {
		t.Errorf("retried pass failed the run: %v", err)
	}
}
