package vm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// KernelErrorKind names one kind of kernel error report.
type KernelErrorKind string

// The kinds of kernel error ClassifyLine recognises. Each is a failure of
// the line whose guest printed it, whatever its tests said.
const (
	KindOops       KernelErrorKind = "oops"        // Oops:, BUG: unable to handle / NULL pointer dereference
	KindBug        KernelErrorKind = "bug"         // kernel BUG at, other BUG: reports
	KindWarning    KernelErrorKind = "warning"     // WARNING: CPU: (WARN_ON), ------------[ cut here ]
	KindGPF        KernelErrorKind = "gpf"         // general protection fault
	KindKASAN      KernelErrorKind = "kasan"       // BUG: KASAN:
	KindUBSAN      KernelErrorKind = "ubsan"       // UBSAN:
	KindKFENCE     KernelErrorKind = "kfence"      // BUG: KFENCE:
	KindSoftLockup KernelErrorKind = "soft-lockup" // watchdog: BUG: soft lockup
	KindHardLockup KernelErrorKind = "hard-lockup" // Watchdog detected hard LOCKUP
	KindRCUStall   KernelErrorKind = "rcu-stall"   // rcu: INFO: ... detected stalls
	KindHungTask   KernelErrorKind = "hung-task"   // INFO: task X blocked for more than N seconds
	KindOOM        KernelErrorKind = "oom-kill"    // Out of memory: Killed process
	KindPanic      KernelErrorKind = "panic"       // Kernel panic - not syncing
	KindTaint      KernelErrorKind = "taint"       // /proc/sys/kernel/tainted names an error the console did not show
)

// kernelPrefix is where a kernel message may start: at the start of the
// line, or after a printk timestamp ("[   12.345678] ", with an optional
// "[T123]"/"[C1]" caller field) anywhere in it, since the serial console
// interleaves kernel messages with the tests' output mid-line. Requiring
// one of the two keeps a test that merely mentions "WARNING:" in the middle
// of its own output from counting.
const kernelPrefix = `(?:^|\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])?\s+)`

// klogRules are tried in order; the first match classifies the line. More
// specific BUG: reports come before the generic one.
var klogRules = []struct {
	kind KernelErrorKind
	re   *regexp.Regexp
}{
	{KindKASAN, regexp.MustCompile(kernelPrefix + `BUG: KASAN: `)},
	{KindKFENCE, regexp.MustCompile(kernelPrefix + `BUG: KFENCE: `)},
	{KindSoftLockup, regexp.MustCompile(kernelPrefix + `(?:watchdog: )?BUG: soft lockup`)},
	{KindHardLockup, regexp.MustCompile(kernelPrefix + `(?:watchdog: )?Watchdog detected hard LOCKUP`)},
	{KindOops, regexp.MustCompile(kernelPrefix + `(?:BUG: unable to handle |BUG: kernel NULL pointer dereference|Oops: )`)},
	{KindBug, regexp.MustCompile(kernelPrefix + `(?:kernel BUG at |BUG: )`)},
	{KindGPF, regexp.MustCompile(kernelPrefix + `general protection fault`)},
	{KindWarning, regexp.MustCompile(kernelPrefix + `(?:WARNING: CPU: |WARNING: at |-+\[ cut here \]-+)`)},
	{KindUBSAN, regexp.MustCompile(kernelPrefix + `UBSAN: `)},
	{KindRCUStall, regexp.MustCompile(kernelPrefix + `(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?`)},
	{KindHungTask, regexp.MustCompile(kernelPrefix + `INFO: task \S+ blocked for more than \d+ seconds`)},
	{KindOOM, regexp.MustCompile(kernelPrefix + `Out of memory: Kill(?:ed)? process`)},
	{KindPanic, regexp.MustCompile(kernelPrefix + `Kernel panic - not syncing`)},
}

// cutHereRE is the line WARN() and BUG() print before their headline.
var cutHereRE = regexp.MustCompile(`-+\[ cut here \]-+`)

// endTraceRE ends an oops or warning report.
var endTraceRE = regexp.MustCompile(`---\[ end (?:trace|Kernel panic)`)

// ClassifyLine tells whether one console line starts a kernel error report,
// and which kind. Lines that only continue a report (registers, call
// traces, "Modules linked in") are not classified.
func ClassifyLine(line string) (KernelErrorKind, bool) {
	for _, r := range klogRules {
		if r.re.MatchString(line) {
			return r.kind, true
		}
	}
	return "", false
}

// KernelError is one report found in a guest's console: its kind, the line
// that names it and the lines after it (up to contextLines), for quoting.
type KernelError struct {
	Kind     KernelErrorKind
	Headline string
	Context  []string
}

func (e KernelError) String() string { return fmt.Sprintf("kernel %s: %s", e.Kind, e.Headline) }

// contextLines is how many lines after a headline are kept and quoted.
const contextLines = 12

// KernelLogScanner collects the kernel error reports of one console, line
// by line. One report (a WARN's "cut here", its "WARNING: CPU:" line and
// its trace; an oops's "BUG:" and "Oops:" lines) counts once: classified
// lines within an open report are context, until its "---[ end trace" or
// contextLines lines later. A panic always opens a report of its own.
type KernelLogScanner struct {
	Errors []KernelError
	open   int // lines left in the open report, 0 when none
}

// Feed inspects one console line.
func (s *KernelLogScanner) Feed(line string) {
	kind, ok := ClassifyLine(line)
	if s.open > 0 && (!ok || kind != KindPanic) {
		cur := &s.Errors[len(s.Errors)-1]
		// A bare "cut here" takes the kind and headline of the line
		// that follows it ("WARNING: CPU:", "kernel BUG at").
		if ok && cutHereRE.MatchString(cur.Headline) && !cutHereRE.MatchString(line) {
			cur.Kind, cur.Headline = kind, strings.TrimSpace(line)
			s.open = max(contextLines-len(cur.Context), 1)
			return
		}
		cur.Context = append(cur.Context, line)
		s.open--
		if endTraceRE.MatchString(line) {
			s.open = 0
		}
		return
	}
	if !ok {
		return
	}
	s.Errors = append(s.Errors, KernelError{Kind: kind, Headline: strings.TrimSpace(line)})
	s.open = contextLines
}

// Taint flags of /proc/sys/kernel/tainted that only a kernel error sets
// (Documentation/admin-guide/tainted-kernels.rst). The others (O: out of
// tree module, E: unsigned module) are expected in the guests.
var errorTaints = []struct {
	bit    uint
	letter byte
	what   string
}{
	{4, 'M', "machine check"},
	{5, 'B', "bad page"},
	{7, 'D', "kernel died (oops)"},
	{9, 'W', "warning"},
	{14, 'L', "soft lockup"},
}

// TaintErrors names the kernel-error taint flags set in taint (the value of
// /proc/sys/kernel/tainted), e.g. "W (warning)", or nothing.
func TaintErrors(taint uint64) []string {
	var out []string
	for _, t := range errorTaints {
		if taint&(1<<t.bit) != 0 {
			out = append(out, fmt.Sprintf("%c (%s)", t.letter, t.what))
		}
	}
	return out
}

// taintError turns the taint the guest reported into a KernelError when it
// names an error none of the console's reports explains (the console shows
// only messages up to its log level; a report may also be cut).
func taintError(taint string, seen []KernelError) (KernelError, bool) {
	if taint == "" {
		return KernelError{}, false
	}
	v, err := strconv.ParseUint(taint, 10, 64)
	if err != nil {
		return KernelError{}, false
	}
	flags := TaintErrors(v)
	if len(flags) == 0 || len(seen) > 0 {
		return KernelError{}, false
	}
	return KernelError{Kind: KindTaint, Headline: fmt.Sprintf("kernel tainted %d: %s, but no report of it reached the console",
		v, strings.Join(flags, ", "))}, true
}
