package vm

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassifyLine(t *testing.T) {
	tests := []struct {
		line string
		kind KernelErrorKind // "" for none
	}{
		// One line of each kind, as Debian's kernels print them.
		{"[   12.345678] ------------[ cut here ]------------", KindWarning},
		{"[   12.345700] WARNING: CPU: 1 PID: 231 at /tmp/warnmod/warnmod.c:14 warnmod_init+0x15/0x30 [warnmod]", KindWarning},
		{"[   12.3] WARNING: at net/core/skbuff.c:1234 skb_release+0x1/0x2", KindWarning},
		{"[   20.100001] BUG: kernel NULL pointer dereference, address: 0000000000000000", KindOops},
		{"[   20.100002] BUG: unable to handle page fault for address: ffffffffc0a01000", KindOops},
		{"[   20.100005] Oops: 0002 [#1] PREEMPT SMP NOPTI", KindOops},
		{"[   20.100005] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI", KindOops},
		{"[   30.1] kernel BUG at /tmp/warnmod/warnmod.c:20!", KindBug},
		{"[   30.1] BUG: sleeping function called from invalid context at mm/slab.h:712", KindBug},
		{"[   30.1] BUG: scheduling while atomic: swapper/0/0/0x00000002", KindBug},
		{"[   30.1] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 32s!", KindBug},
		{"[   40.1] general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI", KindGPF},
		{"[   50.1] BUG: KASAN: slab-use-after-free in skb_release_data+0x3a/0x240", KindKASAN},
		{"[   55.1] BUG: KFENCE: out-of-bounds read in __kfree_skb+0x1/0x2", KindKFENCE},
		{"[   60.1] UBSAN: array-index-out-of-bounds in net/core/drop_monitor.c:120:3", KindUBSAN},
		{"[   70.1] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [busy:123]", KindSoftLockup},
		{"[   80.1] watchdog: Watchdog detected hard LOCKUP on cpu 1", KindHardLockup},
		{"[   90.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", KindRCUStall},
		{"[   90.1] rcu: INFO: rcu_sched self-detected stall on CPU", KindRCUStall},
		{"[   90.1] INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }", KindRCUStall},
		{"[  130.1] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", KindHungTask},
		{"[  140.1] Out of memory: Killed process 1234 (tracer.test) total-vm:2097152kB", KindOOM},
		{"[  150.1] Kernel panic - not syncing: Fatal exception", KindPanic},
		{"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009", KindPanic},
		// A kernel message interleaved into a test's output line.
		{"=== RUN   TestX[   12.3] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2", KindWarning},
		{"--- PASS: TestA (0.01s)[   20.1] BUG: kernel NULL pointer dereference, address: 0000000000000008", KindOops},

		// Not kernel errors.
		{"WARNING: DATA RACE", ""},
		{"==================", ""},
		{"    foo_test.go:12: the kernel says WARNING: CPU: 1 when it warns", ""},
		{"    BUG: this is a test's log line, indented", ""},
		{"--- FAIL: TestBUG (0.00s)", ""},
		{"=== RUN   TestKernelPanicIsReported", ""},
		{"[    3.4] hello: loading out-of-tree module taints kernel.", ""},
		{"[    3.5] hello: module verification failed: signature and/or required key missing - tainting kernel", ""},
		{"[    1.2] clocksource: Marking clocksource 'tsc' as unstable because the skew is too large:", ""},
		{"[   12.3] RIP: 0010:warnmod_init+0x15/0x30 [warnmod]", ""},
		{"[   12.3] ---[ end trace 0000000000000000 ]---", ""},
		{"PKTFATE-VM-RESULT rc=0 taint=12288 END", ""},
		{"panic: runtime error: invalid memory address or nil pointer dereference", ""},
	}
	for _, tt := range tests {
		kind, ok := ClassifyLine(tt.line)
		if ok != (tt.kind != "") || kind != tt.kind {
			t.Errorf("ClassifyLine(%q) = %q, %v; want %q", tt.line, kind, ok, tt.kind)
		}
	}
}

// scanKernelLog feeds a console capture to a KernelLogScanner.
func scanKernelLog(console string) []KernelError {
	var s KernelLogScanner
	sc := bufio.NewScanner(strings.NewReader(console))
	for sc.Scan() {
		s.Feed(strings.TrimRight(sc.Text(), "\r"))
	}
	return s.Errors
}

// The consoles in testdata/consoles are what Debian's kernels print for
// each kind of error (recorded or written after the kernel's formats);
// each file's name says the kinds of the reports it holds, one each.
func TestKernelLogScannerOnConsoles(t *testing.T) {
	tests := []struct {
		file  string
		kinds []KernelErrorKind
		// words every report's headline or context must contain
		headline []string
	}{
		{"warn.txt", []KernelErrorKind{KindWarning}, []string{"WARNING: CPU: 1 PID: 231 at"}},
		{"oops-null.txt", []KernelErrorKind{KindOops}, []string{"BUG: kernel NULL pointer dereference"}},
		{"bug-then-panic.txt", []KernelErrorKind{KindBug, KindPanic}, []string{"kernel BUG at", "Kernel panic - not syncing: Fatal exception"}},
		{"gpf.txt", []KernelErrorKind{KindGPF}, []string{"general protection fault"}},
		{"kasan.txt", []KernelErrorKind{KindKASAN}, []string{"BUG: KASAN: slab-use-after-free"}},
		{"ubsan.txt", []KernelErrorKind{KindUBSAN}, []string{"UBSAN: array-index-out-of-bounds"}},
		{"soft-lockup.txt", []KernelErrorKind{KindSoftLockup}, []string{"soft lockup - CPU#1 stuck for 23s"}},
		{"hard-lockup.txt", []KernelErrorKind{KindHardLockup}, []string{"hard LOCKUP on cpu 1"}},
		{"rcu-stall.txt", []KernelErrorKind{KindRCUStall}, []string{"rcu_preempt detected stalls"}},
		{"hung-task.txt", []KernelErrorKind{KindHungTask}, []string{"blocked for more than 120 seconds"}},
		{"two-warnings.txt", []KernelErrorKind{KindWarning, KindWarning}, []string{"at net/core/skbuff.c", "at net/core/dev.c"}},
		{"clean.txt", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "consoles", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			errs := scanKernelLog(string(data))
			if len(errs) != len(tt.kinds) {
				t.Fatalf("got %d reports %v, want %d (%v)", len(errs), errs, len(tt.kinds), tt.kinds)
			}
			for i, e := range errs {
				if e.Kind != tt.kinds[i] {
					t.Errorf("report %d is %s, want %s: %v", i, e.Kind, tt.kinds[i], e)
				}
				if !strings.Contains(e.Headline, tt.headline[i]) {
					t.Errorf("report %d headline %q lacks %q", i, e.Headline, tt.headline[i])
				}
				if len(e.Context) == 0 || len(e.Context) > contextLines {
					t.Errorf("report %d has %d context lines, want 1..%d", i, len(e.Context), contextLines)
				}
			}
		})
	}
}

func TestKernelLogScannerMergesOneReport(t *testing.T) {
	// A WARN prints "cut here", its message, then the WARNING line: one
	// report, named after the WARNING line, with the message as context.
	errs := scanKernelLog("[ 1.0] ------------[ cut here ]------------\n" +
		"[ 1.0] pktfate warnmod: deliberate warning\n" +
		"[ 1.0] WARNING: CPU: 0 PID: 9 at warnmod.c:14 warnmod_init+0x15/0x30 [warnmod]\n" +
		"[ 1.0] RIP: 0010:warnmod_init+0x15/0x30 [warnmod]\n" +
		"[ 1.0] ---[ end trace 0000000000000000 ]---\n" +
		"=== RUN   TestNext\n")
	if len(errs) != 1 || errs[0].Kind != KindWarning || !strings.Contains(errs[0].Headline, "WARNING: CPU: 0") {
		t.Fatalf("reports = %v, want one warning named by its WARNING line", errs)
	}
	ctx := strings.Join(errs[0].Context, "\n")
	if !strings.Contains(ctx, "deliberate warning") || !strings.Contains(ctx, "RIP:") || strings.Contains(ctx, "TestNext") {
		t.Errorf("context runs from the message to the end of the trace only:\n%s", ctx)
	}
	// A "cut here" with nothing classified after it is still a warning.
	errs = scanKernelLog("[ 1.0] ------------[ cut here ]------------\n[ 1.0] something odd\n")
	if len(errs) != 1 || errs[0].Kind != KindWarning {
		t.Errorf("bare cut here: %v, want one warning", errs)
	}
}

func TestTaintErrors(t *testing.T) {
	// O (out-of-tree module, bit 12) and E (unsigned module, bit 13) are
	// what the guests always have.
	if got := TaintErrors(1<<12 | 1<<13); len(got) != 0 {
		t.Errorf("O+E taint named errors %q", got)
	}
	got := TaintErrors(1<<9 | 1<<7 | 1<<12)
	if strings.Join(got, ",") != "D (kernel died (oops)),W (warning)" {
		t.Errorf("TaintErrors(D|W|O) = %q", got)
	}
	if _, ok := taintError("12288", nil); ok {
		t.Error("O+E taint made an error")
	}
	e, ok := taintError("512", nil)
	if !ok || e.Kind != KindTaint || !strings.Contains(e.Headline, "W (warning)") {
		t.Errorf("W taint without a report: %v, %v; want a taint error", e, ok)
	}
	if _, ok := taintError("512", []KernelError{{Kind: KindWarning}}); ok {
		t.Error("W taint explained by a console report made a second error")
	}
	if _, ok := taintError("", nil); ok {
		t.Error("a marker without taint made an error")
	}
}

func TestCopyConsoleFindsKernelErrors(t *testing.T) {
	var out strings.Builder
	console := "=== RUN   TestX\n" +
		"[   12.3] ------------[ cut here ]------------\n" +
		"[   12.3] WARNING: CPU: 1 PID: 231 at x.c:14 f+0x15/0x30\n" +
		"--- PASS: TestX (0.10s)\n" +
		"[   13.0] PKTFATE-VM-RESULT rc=0 taint=12800 END\n"
	res := copyConsole(strings.NewReader(console), BootSpec{Prefix: "[6.1] ", Out: &out}, nil)
	if !res.Reported || res.RC != 0 || res.Taint != "12800" {
		t.Fatalf("result = %+v, want reported rc=0 taint=12800", res)
	}
	if len(res.KernelErrors) != 1 || res.KernelErrors[0].Kind != KindWarning {
		t.Errorf("kernel errors = %v, want the one warning (its taint W is explained by it)", res.KernelErrors)
	}
	// The same taint with the report missing from the console.
	res = copyConsole(strings.NewReader("--- PASS: TestX\nPKTFATE-VM-RESULT rc=0 taint=12800 END\n"), BootSpec{Out: &out}, nil)
	if len(res.KernelErrors) != 1 || res.KernelErrors[0].Kind != KindTaint {
		t.Errorf("kernel errors = %v, want one taint error", res.KernelErrors)
	}
}
