package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/netns"
)

// NSPrefix starts the name (under /run/netns) of every namespace a
// scenario creates: NSPrefix + pid + "-" + run + "-" + namespace.
const NSPrefix = "pktfate-check-"

// settle is how long the runner keeps tracing once every expectation is
// met: longer than the correlation window, so late sightings and
// unexpected extra fates are seen too.
const settle = 600 * time.Millisecond

// SourceFunc returns the sources that trace one network namespace (its
// inode, and a path to open it), and those that cannot run there with the
// reason. pktfate check gives tracer.Select's: the ebpf source and,
// where the kernel can, its netfilter attribution.
type SourceFunc func(inode uint32, path string) ([]fate.Source, []fate.SourceStatus, error)

// Runner runs scenarios with the real tracing pipeline. It needs root.
type Runner struct {
	// Sources builds the sources of each scenario's capture.
	Sources SourceFunc
	// Now reads the sources' clock (capture.Config.Now).
	Now func() uint64
	// Reasons are the running kernel's drop reason names, to note
	// expectations this kernel cannot meet.
	Reasons []string
	// Retry runs a failing scenario once more (a pass then is a flake).
	Retry bool
	// Baseline, when set, is compared with every result.
	Baseline *Baseline
	// Log receives progress (nil: discarded).
	Log io.Writer
	// Release is the running kernel's release (uname -r), for
	// expectations limited to some kernels.
	Release string

	seq atomic.Uint64
}

// NewRunner returns a Runner with its sources, retrying failures, for
// the running kernel.
func NewRunner(sources SourceFunc, now func() uint64, reasons []string) (*Runner, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, fmt.Errorf("reading the kernel release: %w", err)
	}
	return &Runner{Sources: sources, Now: now, Reasons: reasons, Retry: true, Release: unix.ByteSliceToString(u.Release[:])}, nil
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// RunAll runs scenarios one after the other (each in its own namespaces),
// calling done with each result. It stops early when ctx is done.
func (r *Runner) RunAll(ctx context.Context, scenarios []*Scenario, done func(*Result)) []*Result {
	netns.RemoveStale(NSPrefix)
	var out []*Result
	for _, s := range scenarios {
		if ctx.Err() != nil {
			break
		}
		res := r.Run(ctx, s)
		if res.Status != StatusPass && r.Retry && ctx.Err() == nil {
			r.logf("%s: %s, running it again", s.Name, res.Status)
			res = Retry(res, r.Run(ctx, s))
		}
		out = append(out, res)
		if done != nil {
			done(res)
		}
	}
	return out
}

// Run runs one scenario once and checks it.
func (r *Runner) Run(ctx context.Context, s *Scenario) *Result {
	start := time.Now()
	obs, env, notes, err := r.run(ctx, s)
	var base *BaselineScenario
	kernel := ""
	if r.Baseline != nil {
		base, kernel = r.Baseline.Scenarios[s.Name], r.Baseline.Kernel
	}
	var res *Result
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		res = &Result{Name: s.Name, File: s.File, Status: StatusError, Error: err.Error()}
	} else {
		res = Check(s, obs, env, base, kernel)
		if r.Baseline != nil && base == nil {
			res.Notes = append(res.Notes, "not in the baseline")
		}
	}
	res.Notes = append(res.Notes, notes...)
	res.Seconds = time.Since(start).Seconds()
	return res
}

// collector is the renderer that keeps every packet's fate.
type collector struct {
	mu  sync.Mutex
	obs []*Observed
}

func observed(e *fate.Event, observers []string, verdict string) *Observed {
	p := &e.Packet
	return &Observed{Fate: e.Fate.String(), Reason: e.Reason, Hook: e.Hook, Function: baseFunction(fate.Function(e.Location)),
		Observers: observers, Verdict: verdict, Proto: p.Proto, Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport, ICMPType: p.ICMPType}
}

// baseFunction drops the suffixes the compiler gives the copies of a
// function it specialises (ip_rcv_finish_core.constprop.0, .isra.0,
// .part.0, .cold): the same code on every kernel has the same name.
func baseFunction(fn string) string {
	name, _, _ := strings.Cut(fn, ".")
	return name
}

func (c *collector) Event(e *fate.Event) error {
	c.mu.Lock()
	c.obs = append(c.obs, observed(e, []string{e.Source}, fate.VerdictSingle.String()))
	c.mu.Unlock()
	return nil
}

func (c *collector) Fate(fr *fate.FateRecord) error {
	c.mu.Lock()
	c.obs = append(c.obs, observed(fr.Event, fr.Confirmations(), fr.Verdict.String()))
	c.mu.Unlock()
	return nil
}

func (c *collector) Summary(*fate.Summary) error { return nil }
func (c *collector) Flush() error                { return nil }

func (c *collector) snapshot() []*Observed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.obs)
}

// topology is a scenario's namespaces, created by build.
type topology struct {
	ns      map[string]*netns.NS
	order   []*netns.NS
	closers []io.Closer
}

func (t *topology) Close() error {
	var errs []error
	for _, c := range slices.Backward(t.closers) {
		c.Close()
	}
	for _, n := range slices.Backward(t.order) {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

func (r *Runner) build(ctx context.Context, s *Scenario) (_ *topology, err error) {
	top := &topology{ns: map[string]*netns.NS{}}
	defer func() {
		if err != nil {
			top.Close()
		}
	}()
	base := fmt.Sprintf("%s%d-%d-", NSPrefix, os.Getpid(), r.seq.Add(1))
	for _, n := range s.Namespaces {
		ns, err := netns.New(base + n.Name)
		if err != nil {
			return nil, err
		}
		top.ns[n.Name] = ns
		top.order = append(top.order, ns)
	}
	for _, v := range s.Veths {
		if err := netns.Veth(top.ns[v.A.Netns], v.A.Name, top.ns[v.B.Netns], v.B.Name); err != nil {
			return nil, err
		}
		for _, end := range []VethEnd{v.A, v.B} {
			for _, a := range end.Addrs {
				if err := top.ns[end.Netns].AddAddr(end.Name, a.String()); err != nil {
					return nil, fmt.Errorf("namespace %s: %w", end.Netns, err)
				}
			}
		}
	}
	for _, n := range s.Namespaces {
		ns := top.ns[n.Name]
		for _, sc := range n.Sysctls {
			if err := ns.Sysctl(sc.Key, sc.Value); err != nil {
				return nil, fmt.Errorf("namespace %s: %w", n.Name, err)
			}
		}
		for _, rt := range n.Routes {
			if err := ns.AddRoute(rt.To, rt.Via, rt.Dev); err != nil {
				return nil, fmt.Errorf("namespace %s: %w", n.Name, err)
			}
		}
	}
	for i, rule := range s.Rules {
		ns := top.ns[rule.Netns]
		if rule.Tool == ToolNftables {
			if _, err := ns.Exec(ctx, rule.Ruleset, "nft", "-f", "-"); err != nil {
				return nil, fmt.Errorf("rules[%d] in %s: %w", i, rule.Netns, err)
			}
			continue
		}
		for _, c := range rule.Commands {
			args := c
			if strings.Contains(rule.Tool, "tables") {
				args = append([]string{"-w"}, c...)
			}
			if _, err := ns.Exec(ctx, "", rule.Binary(), args...); err != nil {
				return nil, fmt.Errorf("rules[%d] in %s: %w", i, rule.Netns, err)
			}
		}
	}
	for _, l := range s.Listen {
		c, err := listen(top.ns[l.Netns], l)
		if err != nil {
			return nil, err
		}
		top.closers = append(top.closers, c)
	}
	return top, nil
}

// run builds the scenario's namespaces, traces the one named by Trace
// while the traffic is sent, and returns what was seen.
func (r *Runner) run(ctx context.Context, s *Scenario) ([]*Observed, Env, []string, error) {
	var env Env
	var notes []string
	for _, x := range s.Expect {
		for _, reason := range x.Reasons {
			if !slices.Contains(r.Reasons, reason) {
				notes = append(notes, fmt.Sprintf("%s: this kernel has no drop reason %s", x.Name, reason))
			}
		}
	}
	for _, rule := range s.Rules {
		if err := ToolAvailable(rule.Tool); err != nil {
			return nil, env, notes, fmt.Errorf("rules need %w", err)
		}
	}
	top, err := r.build(ctx, s)
	if err != nil {
		return nil, env, notes, fmt.Errorf("setting up: %w", err)
	}
	defer func() {
		if err := top.Close(); err != nil {
			r.logf("%s: removing namespaces: %v", s.Name, err)
		}
	}()
	traced := top.ns[s.Trace]
	sources, status, err := r.Sources(traced.Inode, "/run/netns/"+traced.Name)
	if err != nil {
		return nil, env, notes, fmt.Errorf("choosing sources: %w", err)
	}
	env.Kernel = r.Release
	for _, src := range sources {
		env.Running = append(env.Running, src.Observers()...)
	}
	for _, st := range status {
		notes = append(notes, fmt.Sprintf("source %s not running: %s", st.Name, st.Reason))
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The sender goroutine owns notes and sendErr until sent is closed.
	var sendErr error
	sent := make(chan struct{})
	ready := false
	_, err = capture.Run(ctx, capture.Config{
		Now:       r.Now,
		Sources:   sources,
		FatesOnly: true,
		Status:    status,
		Renderer:  col,
		Ready: func() error {
			ready = true
			go func() {
				defer close(sent)
				for _, t := range s.Traffic {
					n, err := send(ctx, top.ns[t.From], t)
					notes = append(notes, n...)
					if err != nil {
						sendErr = err
						cancel()
						return
					}
				}
				r.wait(ctx, s, col, env)
				cancel()
			}()
			return nil
		},
	}, nil)
	cancel()
	if ready {
		<-sent
	}
	if err != nil {
		return nil, env, notes, fmt.Errorf("tracing: %w", err)
	}
	if sendErr != nil {
		return nil, env, notes, fmt.Errorf("sending traffic: %w", sendErr)
	}
	return col.snapshot(), env, notes, nil
}

// source is the ebpf source for the traced namespace, with the netfilter
// attribution attached in it when asked for and the kernel can (else a
// note says why not).
// wait returns once every expectation is met (and the settle time has
// passed), or after the scenario's timeout.
func (r *Runner) wait(ctx context.Context, s *Scenario, col *collector, env Env) {
	deadline := time.NewTimer(s.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
			if Check(s, col.snapshot(), env, nil, "").Status == StatusPass {
				select {
				case <-ctx.Done():
				case <-time.After(settle):
				}
				return
			}
		}
	}
}

// ToolAvailable tells whether a rule tool can run here: its program is
// in $PATH and, for tc and ip, is iproute2's (busybox has applets of the
// same names that take other arguments).
func ToolAvailable(tool string) error {
	bin := Rule{Tool: tool}.Binary()
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("%s (make deps installs it): %w", bin, err)
	}
	if tool == ToolTC || tool == ToolIP {
		out, _ := exec.Command(path, "-V").CombinedOutput()
		if !strings.Contains(string(out), "iproute2") {
			return fmt.Errorf("%s from iproute2: %s is another program (busybox?)", bin, path)
		}
	}
	return nil
}
