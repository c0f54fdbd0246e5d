package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrFailed is returned by Run when a kernel did not pass.
var ErrFailed = errors.New("kernel matrix failed")

// Config is one harness run.
type Config struct {
	Lines    []Line
	Run      string        // -test.run pattern passed to every test binary
	Timeout  time.Duration // hard limit per VM
	Shell    bool          // interactive shell instead of tests (one line only)
	Keep     bool          // keep the temporary folder
	Verbose  bool          // progress notes
	Patterns []string      // packages whose tests run, default ./...
	Race     []string      // packages (go list patterns) whose test binaries have the race detector
	KmodDirs []string      // out-of-tree module folders built per kernel
	Modules  []string      // kernel modules loaded at boot besides GuestModules
	Parallel int           // VMs at a time (1 or 2 on a 2-core host)
	// Busy is how many CPU-burning processes each guest runs while its
	// tests run (they see the number in PKTFATE_VM_BUSY).
	Busy int
	// Retries is how many times a VM that exited without a result marker
	// and without a kernel error is booted again (see boot).
	Retries int
	// Artifacts receives, in a folder per line, the files the guests'
	// tests send out (package artifact); empty discards them.
	Artifacts string
	Cache     Cache
	RepoDir   string
	Out       io.Writer

	// Machine is the emulated machine (the zero value is the matrix's).
	Machine Machine
	// Script, when set, is what each guest runs (bash, in /repo, with
	// GuestEnv set) instead of test binaries; its exit status is the
	// guest's result. No test binary is built; pktfate still is.
	Script string
	// Files are host files shipped into every guest, binaries with their
	// shared libraries.
	Files []GuestFile
	// GuestPackages are Debian packages shipped per kernel line (by line
	// name), see FetchGuestPackages.
	GuestPackages map[string]GuestPackages
}

// Run builds the payload, prepares every kernel line and runs the tests in
// one VM per line, ending each line with "PASS kernel=<release>" or
// "FAIL kernel=<release>" and a timing summary. It returns ErrFailed (wrapped)
// when any line failed: a test failed, the kernel reported an error (oops,
// WARN, lockup... in any boot), or the VM never reported. Only a VM that
// exited without reporting and without a kernel error is booted again
// (Config.Retries); failed tests are never retried.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Shell && len(cfg.Lines) != 1 {
		return errors.New("starting shell: name exactly one kernel line with -kernel")
	}
	r, err := newRunner(cfg)
	if err != nil {
		return err
	}
	defer r.cleanup()
	unlock, err := lockCache(cfg.Cache, r.out)
	if err != nil {
		return err
	}
	// The cache is only written while preparing: release it before the
	// VMs run (a -shell session may last long).
	r.prepared.Add(len(cfg.Lines))
	go func() { r.prepared.Wait(); unlock() }()
	go r.buildPayload(ctx)
	stopChroots := r.startChroots(ctx)
	results := r.runLines(ctx)
	stopChroots()
	if cfg.Shell {
		return results[0].err
	}
	return r.summary(results)
}

// startChroots begins creating the build chroot of lines whose modules are
// built in one (sid) right away, in the background, instead of after their
// kernel is downloaded: it is the longest step of a cold run. Line.CC is the
// expected compiler; BuildModules checks the real one from the headers.
func (r *runner) startChroots(ctx context.Context) (stop func()) {
	if len(r.cfg.KmodDirs) == 0 || r.cfg.Shell {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, l := range r.cfg.Lines {
		if l.Chroot {
			wg.Go(func() {
				if _, err := EnsureChroot(ctx, r.cfg.Cache, l.CC, r.info); err != nil {
					logf(r.info, "%s: early chroot creation failed (retried when needed): %v", l.Name, err)
				}
			})
		}
	}
	// Lines that needed the chroot have waited for it already; one no line
	// needed (its kernel failed to download) is abandoned, not left running.
	return func() { cancel(); wg.Wait() }
}

// runLines runs every line in its own goroutine. Lines prepare
// concurrently but boot in order: line i waits for line i-Parallel, so
// output and verdicts come in a stable order and at most Parallel VMs run.
func (r *runner) runLines(ctx context.Context) []lineResult {
	lines := r.cfg.Lines
	results := make([]lineResult, len(lines))
	done := make([]chan struct{}, len(lines))
	for i := range done {
		done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i, line := range lines {
		var turn <-chan struct{}
		if i >= r.cfg.Parallel {
			turn = done[i-r.cfg.Parallel]
		}
		wg.Go(func() {
			defer close(done[i])
			results[i] = r.runLine(ctx, line, turn)
		})
	}
	wg.Wait()
	return results
}

// runner holds what the lines of one run share.
type runner struct {
	cfg      Config
	out      *syncWriter
	info     io.Writer // progress notes, nil unless verbose
	work     string
	apt      *Apt
	resolver *Resolver
	prepared sync.WaitGroup                                      // lines still writing to the cache
	bootVM   func(context.Context, BootSpec) (BootResult, error) // Boot; replaced in tests

	payloadDone chan struct{}
	payload     Payload
	payloadErr  error
	payloadTime time.Duration
}

func newRunner(cfg Config) (*runner, error) {
	if cfg.Parallel < 1 {
		cfg.Parallel = 1
	}
	work, err := os.MkdirTemp("", "pktfate-vm-")
	if err != nil {
		return nil, fmt.Errorf("creating work dir: %w", err)
	}
	r := &runner{cfg: cfg, out: &syncWriter{w: cfg.Out}, work: work, payloadDone: make(chan struct{}), bootVM: Boot}
	if cfg.Verbose {
		r.info = r.out
	}
	var suites []string
	for _, l := range Lines() {
		suites = append(suites, l.Suite)
	}
	r.apt = &Apt{Dir: cfg.Cache.aptDir(), Log: r.info, Suites: suites}
	r.resolver = &Resolver{Cache: cfg.Cache, Apt: r.apt, Log: r.out, Lines: cfg.Lines}
	return r, nil
}

func (r *runner) cleanup() {
	if r.cfg.Keep {
		fmt.Fprintf(r.out, "kept work dir %s\n", r.work)
		return
	}
	os.RemoveAll(r.work)
}

// buildPayload compiles the test binaries while the kernels download.
func (r *runner) buildPayload(ctx context.Context) {
	defer close(r.payloadDone)
	start := time.Now()
	r.payload, r.payloadErr = BuildPayload(ctx, PayloadConfig{
		RepoDir: r.cfg.RepoDir, Patterns: r.cfg.Patterns, Race: r.cfg.Race, WorkDir: r.work, Log: r.out,
		NoTests: r.cfg.Script != "", Files: r.cfg.Files,
	})
	r.payloadTime = time.Since(start)
	if r.payloadErr == nil {
		logf(r.info, "payload: %d test binaries built in %s", len(r.payload.Packages), round(r.payloadTime))
		var race []string
		for _, p := range r.payload.Packages {
			if p.Race {
				race = append(race, p.Rel)
			}
		}
		if len(race) > 0 {
			fmt.Fprintf(r.out, "race detector on in: %s\n", strings.Join(race, " "))
		}
	}
}

// lineResult is the outcome of one kernel line.
type lineResult struct {
	line    Line
	release string
	stages  []stage
	err     error // harness failure (resolve, download, build, VM never reported)
	rc      int   // guest status when the VM reported
	// kernelErrors are the kernel error reports of every boot of the line.
	kernelErrors []KernelError
	retries      []string // why each retried boot was retried
}

type stage struct {
	name string
	d    time.Duration
}

func (res *lineResult) timed(name string, start time.Time) {
	res.stages = append(res.stages, stage{name, time.Since(start)})
}

func (res lineResult) passed() bool {
	return res.err == nil && res.rc == 0 && len(res.kernelErrors) == 0
}

// runLine takes one kernel line from resolution to its PASS/FAIL line.
func (r *runner) runLine(ctx context.Context, line Line, turn <-chan struct{}) lineResult {
	res := lineResult{line: line, release: line.Name}
	initrd, k, err := r.prepare(ctx, line, &res)
	r.prepared.Done()
	if turn != nil {
		<-turn
	}
	if err == nil {
		err = r.boot(ctx, line, k, initrd, &res)
	}
	res.err = err
	if r.cfg.Shell {
		return res
	}
	if err != nil {
		fmt.Fprintf(r.out, "[%s] error: %v\n", line.Name, err)
	}
	verdict := "PASS"
	if !res.passed() {
		verdict = "FAIL"
	}
	// "PASS kernel=R", "PASS kernel=R (after 1 retry: ...)", "FAIL kernel=R why"
	text := verdict + " kernel=" + res.release
	if rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(res.verdict(), verdict), ":")); rest != "" {
		text += " " + rest
	}
	fmt.Fprintln(r.out, text)
	return res
}

// prepare resolves and fetches the kernel, builds its base initramfs and
// modules, and assembles the VM's initrd.
func (r *runner) prepare(ctx context.Context, line Line, res *lineResult) (string, Kernel, error) {
	start := time.Now()
	resolved, err := r.resolver.Resolve(ctx, line)
	res.timed("resolve", start)
	if err != nil {
		return "", Kernel{}, err
	}
	res.release = resolved.Release
	start = time.Now()
	k, fetched, err := FetchKernel(ctx, r.cfg.Cache, r.apt, line, resolved, r.info)
	res.timed("download", start)
	if err != nil {
		return "", k, err
	}
	if fetched {
		logf(r.info, "[%s] %s downloaded and extracted in %s", line.Name, k.Release, round(time.Since(start)))
	}
	start = time.Now()
	base, err := BuildBase(k, append(slices.Clone(GuestModules), r.cfg.Modules...), r.info)
	if err != nil {
		return "", k, err
	}
	kmod := ""
	if len(r.cfg.KmodDirs) > 0 {
		if kmod, err = BuildModules(ctx, r.cfg.Cache, k, r.cfg.KmodDirs, r.info); err != nil {
			return "", k, err
		}
	}
	var pkgs guestPkgRoot
	if gp, ok := r.cfg.GuestPackages[line.Name]; ok {
		if pkgs, err = FetchGuestPackages(ctx, r.cfg.Cache, r.apt, gp, r.info); err != nil {
			return "", k, err
		}
	}
	spent := time.Since(start)
	<-r.payloadDone
	if r.payloadErr != nil {
		return "", k, r.payloadErr
	}
	start = time.Now()
	initrd, err := r.assemble(ctx, line, base, kmod, pkgs)
	res.stages = append(res.stages, stage{"initramfs", spent + time.Since(start)})
	return initrd, k, err
}

// assemble concatenates the base archive, the shared payload and a small
// per-kernel archive (run.sh, modules) into the VM's initrd.
func (r *runner) assemble(ctx context.Context, line Line, base, kmod string, pkgs guestPkgRoot) (string, error) {
	extra := filepath.Join(r.work, "extra-"+line.Name+".cpio")
	script := runnerScript(runnerSpec{
		Line: line.Name, Packages: r.payload.Packages, Run: r.cfg.Run, Timeout: testTimeout(r.cfg.Timeout),
		HasBin: r.payload.HasBin, HasKmod: kmod != "" && len(listKos(kmod)) > 0, Shell: r.cfg.Shell,
		Busy: r.cfg.Busy, Script: r.cfg.Script,
	})
	set := newFileSet()
	if pkgs.Root != "" {
		if err := set.addGuestPackages(ctx, pkgs, r.cfg.GuestPackages[line.Name].Dirs); err != nil {
			return "", err
		}
	}
	err := writeArchive(extra, func(c *CPIOWriter) error {
		if err := set.write(c); err != nil {
			return err
		}
		if err := c.File(guestRunner, 0o755, []byte(script)); err != nil {
			return err
		}
		if err := c.File(guestBusy, 0o755, []byte("# a CPU-burning loop (vmtest -busy)\nwhile :; do :; done\n")); err != nil {
			return err
		}
		if kmod == "" {
			return nil
		}
		return kmodFiles(c, kmod)
	})
	if err != nil {
		return "", err
	}
	initrd := filepath.Join(r.work, "initrd-"+line.Name+".cpio")
	if err := concatFiles(initrd, base, r.payload.Archive, extra); err != nil {
		return "", fmt.Errorf("assembling initramfs: %w", err)
	}
	return initrd, nil
}

// testTimeout leaves a minute between the test binaries' own timeout
// (which prints goroutine dumps) and the VM's hard limit.
func testTimeout(vm time.Duration) time.Duration {
	if vm <= 2*time.Minute {
		return 0
	}
	return vm - time.Minute
}

// boot runs the VM. A boot whose console shows a kernel error (oops, WARN,
// lockup, panic... see ClassifyLine) fails the line, whether or not its
// tests passed, and is never retried. A VM that hangs until the limit is a
// failure too (a second boot would cost another limit). Only a VM that
// exited without a result marker and without a kernel error (QEMU died,
// the console was cut) is booted again, up to Config.Retries times; a pass
// after that is reported as one ("PASS (after 1 retry: why)").
func (r *runner) boot(ctx context.Context, line Line, k Kernel, initrd string, res *lineResult) error {
	start := time.Now()
	defer res.timed("boot+tests", start)
	spec := BootSpec{Kernel: k.BootImage(), Initrd: initrd, Prefix: "[" + line.Name + "] ",
		Out: r.out, Shell: r.cfg.Shell, Limit: r.cfg.Timeout, Machine: r.cfg.Machine}
	if r.cfg.Artifacts != "" {
		// No stale file from an earlier run may stand in for this one's.
		spec.Artifacts = filepath.Join(r.cfg.Artifacts, line.Name)
		if err := os.RemoveAll(spec.Artifacts); err != nil {
			return err
		}
	}
	if r.cfg.Shell {
		_, err := r.bootVM(ctx, spec)
		return err
	}
	for attempt := 1; ; attempt++ {
		br, err := r.bootVM(ctx, spec)
		if err != nil {
			return err
		}
		res.rc = br.RC
		if len(br.KernelErrors) > 0 {
			r.quoteKernelErrors(line, attempt, br.KernelErrors)
			res.kernelErrors = append(res.kernelErrors, br.KernelErrors...)
			if !br.Reported {
				return fmt.Errorf("running tests on %s: VM did not report a result after a kernel error", k.Release)
			}
			return nil
		}
		if br.Reported {
			return nil
		}
		if br.TimedOut {
			return fmt.Errorf("running tests on %s: VM hung: no result within %s and no kernel error on the console (last line: %q)",
				k.Release, r.cfg.Timeout, lastLine(br.Tail))
		}
		why := fmt.Sprintf("boot %d: qemu exited without a result marker (last console line: %q)", attempt, lastLine(br.Tail))
		if attempt > r.cfg.Retries || ctx.Err() != nil {
			return fmt.Errorf("running tests on %s: VM did not report a result: %s", k.Release, why)
		}
		res.retries = append(res.retries, why)
		fmt.Fprintf(r.out, "[%s] RETRY: %s, no kernel error; booting again (retry %d of %d)\n", line.Name, why, attempt, r.cfg.Retries)
	}
}

// quoteKernelErrors prints each kernel error report of one boot: the kind,
// the headline and the lines that follow it.
func (r *runner) quoteKernelErrors(line Line, attempt int, errs []KernelError) {
	p := "[" + line.Name + "] "
	for _, e := range errs {
		fmt.Fprintf(r.out, "%sKERNEL ERROR (boot %d): %s\n", p, attempt, e)
		for _, c := range e.Context {
			fmt.Fprintf(r.out, "%s    | %s\n", p, c)
		}
	}
}

func lastLine(tail []string) string {
	for i := len(tail) - 1; i >= 0; i-- {
		if t := strings.TrimSpace(tail[i]); t != "" {
			return t
		}
	}
	return ""
}

// maxQuoted is how many kernel errors a line's verdict and summary name.
const maxQuoted = 5

// verdict is a line's result in one line: PASS, PASS (after N retries:
// why), or FAIL: why.
func (res lineResult) verdict() string {
	if res.passed() {
		if len(res.retries) == 0 {
			return "PASS"
		}
		return fmt.Sprintf("PASS (after %d %s: %s)", len(res.retries), plural(len(res.retries), "retry", "retries"), strings.Join(res.retries, "; "))
	}
	var why []string
	if n := len(res.kernelErrors); n > 0 {
		kinds := map[KernelErrorKind]bool{}
		var names []string
		for _, e := range res.kernelErrors {
			if !kinds[e.Kind] {
				kinds[e.Kind] = true
				names = append(names, string(e.Kind))
			}
		}
		why = append(why, fmt.Sprintf("%d kernel %s (%s)", n, plural(n, "error", "errors"), strings.Join(names, ", ")))
	}
	if res.err != nil {
		why = append(why, res.err.Error())
	} else if res.rc != 0 {
		why = append(why, fmt.Sprintf("tests failed (guest status %d)", res.rc))
	}
	if len(res.retries) > 0 {
		why = append(why, fmt.Sprintf("after %d %s: %s", len(res.retries), plural(len(res.retries), "retry", "retries"), strings.Join(res.retries, "; ")))
	}
	return "FAIL: " + strings.Join(why, "; ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// summary prints the stage timings of every line, then each line's result
// with the kernel errors it saw, and the overall verdict.
func (r *runner) summary(results []lineResult) error {
	fmt.Fprintf(r.out, "timings: build (go test -c, payload) %s\n", round(r.payloadTime))
	var failed []string
	for _, res := range results {
		var parts []string
		for _, s := range res.stages {
			parts = append(parts, fmt.Sprintf("%s %s", s.name, round(s.d)))
		}
		fmt.Fprintf(r.out, "timings: %-5s %s: %s\n", res.line.Name, res.release, strings.Join(parts, ", "))
		if !res.passed() {
			failed = append(failed, res.release)
		}
	}
	for _, res := range results {
		fmt.Fprintf(r.out, "result: %-5s %s: %s\n", res.line.Name, res.release, res.verdict())
		for i, e := range res.kernelErrors {
			if i == maxQuoted {
				fmt.Fprintf(r.out, "result: %-5s   ... and %d more kernel errors (quoted above)\n", res.line.Name, len(res.kernelErrors)-maxQuoted)
				break
			}
			fmt.Fprintf(r.out, "result: %-5s   %s\n", res.line.Name, e)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %s", ErrFailed, strings.Join(failed, " "))
	}
	return nil
}

// concatFiles writes the concatenation of srcs to dst.
func concatFiles(dst string, srcs ...string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	for _, s := range srcs {
		in, err := os.Open(s)
		if err != nil {
			out.Close()
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// syncWriter serialises writes from the lines' goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
