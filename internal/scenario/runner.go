package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
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
// reason. pktfate check gives tracer.ForNetns: the ebpf source filtered to
// that namespace in the kernel and, where the kernel can, its netfilter
// attribution attached in it.
type SourceFunc func(inode uint32, path string) ([]fate.Source, []fate.SourceStatus, error)

// AllSourceFunc returns sources that trace every network namespace, for
// scenarios that trace several: the runner keeps the fates of the traced
// ones (a source's in-kernel filter takes one namespace at most).
type AllSourceFunc func() ([]fate.Source, []fate.SourceStatus, error)

// Runner runs scenarios with the real tracing pipeline. It needs root.
type Runner struct {
	// Sources builds the sources of each scenario's capture.
	Sources SourceFunc
	// AllSources builds them for scenarios that trace several namespaces
	// (nil: such scenarios cannot run).
	AllSources AllSourceFunc
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
		if !res.Status.Passed() && r.Retry && ctx.Err() == nil {
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

// collector is the renderer that keeps every packet's fate, with the
// namespace it met it in named as the scenario names it.
type collector struct {
	mu  sync.Mutex
	obs []*Observed
	// names maps the traced namespaces' inodes to their scenario names.
	names map[uint32]string
	// several: the sources trace every namespace, the collector keeps
	// the traced ones (and counts the packets of no known namespace).
	several bool
	// nowhere holds the fates of packets whose namespace is unknown when
	// tracing several (the sources could not tell it), elsewhere those
	// of packets met in untraced namespaces: left out of the checks,
	// noted when an expectation selects them.
	nowhere, elsewhere []*Observed
}

func (c *collector) observed(e *fate.Event, observers []string, blind map[string]string, verdict string) {
	p := &e.Packet
	o := &Observed{Fate: e.Fate.String(), Reason: e.Reason, Hook: e.Hook, Family: e.Family, Function: baseFunction(fate.Function(e.Location)),
		Observers: observers, Blind: blind, Verdict: verdict, Iface: e.Ifname,
		Proto: p.Proto, Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport, ICMPType: p.ICMPType, TCPFlags: p.TCPFlags}
	name, traced := c.names[e.Netns]
	switch {
	case traced:
		o.Netns = name
	case c.several && e.Netns == 0:
		c.mu.Lock()
		c.nowhere = append(c.nowhere, o)
		c.mu.Unlock()
		return
	case c.several:
		// Another namespace's packet (or one the sources placed wrongly).
		o.Netns = fmt.Sprintf("inode %d", e.Netns)
		c.mu.Lock()
		c.elsewhere = append(c.elsewhere, o)
		c.mu.Unlock()
		return
	case e.Netns != 0:
		o.Netns = fmt.Sprintf("inode %d", e.Netns)
	}
	c.mu.Lock()
	c.obs = append(c.obs, o)
	c.mu.Unlock()
}

// baseFunction drops the suffixes the compiler gives the copies of a
// function it specialises (ip_rcv_finish_core.constprop.0, .isra.0,
// .part.0, .cold): the same code on every kernel has the same name.
func baseFunction(fn string) string {
	name, _, _ := strings.Cut(fn, ".")
	return name
}

func (c *collector) Event(e *fate.Event) error {
	c.observed(e, []string{e.Source}, nil, fate.VerdictSingle.String())
	return nil
}

func (c *collector) Fate(fr *fate.FateRecord) error {
	var blind map[string]string
	for _, o := range fr.Observers {
		if o.Status == fate.StatusBlind {
			if blind == nil {
				blind = map[string]string{}
			}
			blind[o.Name] = o.Why
		}
	}
	c.observed(fr.Event, fr.Confirmations(), blind, fr.Verdict.String())
	return nil
}

func (c *collector) Summary(*fate.Summary) error { return nil }
func (c *collector) Flush() error                { return nil }

func (c *collector) snapshot() []*Observed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.obs)
}

// nowhereNotes says, per expectation, how many packets it would have
// selected had the fate been met in a traced namespace the sources named.
func (c *collector) nowhereNotes(s *Scenario) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var notes []string
	for _, x := range s.Expect {
		for _, set := range []struct {
			obs []*Observed
			why string
		}{
			{c.nowhere, "whose namespace the sources could not name"},
			{c.elsewhere, "met in namespaces not traced"},
		} {
			var selected []*Observed
			for _, o := range set.obs {
				if x.Match.Matches(o) {
					selected = append(selected, o)
				}
			}
			if len(selected) > 0 {
				notes = append(notes, fmt.Sprintf("%s: left out %d packets it selects %s (tracing several namespaces, the runner keeps the traced ones): %s",
					x.Name, len(selected), set.why, describe(Summarise(selected))))
			}
		}
	}
	return notes
}

// namedListener is a listener a traffic step can close.
type namedListener struct {
	io.Closer
	netns string
}

// topology is a scenario's namespaces, created by build.
type topology struct {
	ns        map[string]*netns.NS
	order     []*netns.NS
	listeners map[string]namedListener
	closers   []io.Closer
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

// build creates the scenario's network, in the order of docs/scenarios.md:
// namespaces, veth pairs, sysctls, devices (and the sysctls of their
// interfaces), routes, rules, listeners.
func (r *Runner) build(ctx context.Context, s *Scenario) (_ *topology, err error) {
	top := &topology{ns: map[string]*netns.NS{}, listeners: map[string]namedListener{}}
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
			if err := configure(ctx, top.ns[end.Netns], end.Name, end.MTU, end.Addrs); err != nil {
				return nil, fmt.Errorf("namespace %s: %w", end.Netns, err)
			}
		}
	}
	// Sysctls once the veth pairs exist, so that defaults (such as
	// net.ipv6.conf.default.*) apply to the devices; a key that does not
	// exist yet (one of a device's interfaces) is set after the devices.
	later := map[string][]Sysctl{}
	for _, n := range s.Namespaces {
		for _, sc := range n.Sysctls {
			err := top.ns[n.Name].Sysctl(sc.Key, sc.Value)
			if errors.Is(err, fs.ErrNotExist) {
				later[n.Name] = append(later[n.Name], sc)
			} else if err != nil {
				return nil, fmt.Errorf("namespace %s: %w", n.Name, err)
			}
		}
	}
	for _, d := range s.Devices {
		if err := addDevice(ctx, top.ns[d.Netns], d); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", d.Netns, err)
		}
	}
	for _, n := range s.Namespaces {
		ns := top.ns[n.Name]
		for _, sc := range later[n.Name] {
			err := ns.Sysctl(sc.Key, sc.Value)
			if err != nil && sc.Optional && errors.Is(err, fs.ErrNotExist) {
				r.logf("%s: namespace %s has no sysctl %s: skipped", s.Name, n.Name, sc.Key)
				continue
			}
			if err != nil {
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
		if l.Name != "" {
			top.listeners[l.Name] = namedListener{Closer: c, netns: l.Netns}
		}
	}
	return top, nil
}

// configure sets an interface's MTU and addresses.
func configure(ctx context.Context, ns *netns.NS, name string, mtu int, addrs []netip.Prefix) error {
	if mtu > 0 {
		if _, err := ns.Exec(ctx, "", "ip", "link", "set", "dev", name, "mtu", strconv.Itoa(mtu)); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		if err := ns.AddAddr(name, a.String()); err != nil {
			return err
		}
	}
	return nil
}

// addDevice creates a device with ip link, makes it the master of its
// ports, configures it and sets it up.
func addDevice(ctx context.Context, ns *netns.NS, d Device) error {
	args := append([]string{"link", "add", d.Name, "type", d.Type}, d.Args...)
	if _, err := ns.Exec(ctx, "", "ip", args...); err != nil {
		return fmt.Errorf("creating %s %s (does the kernel have its module?): %w", d.Type, d.Name, err)
	}
	for _, p := range d.Ports {
		if _, err := ns.Exec(ctx, "", "ip", "link", "set", "dev", p, "master", d.Name); err != nil {
			return err
		}
	}
	if err := configure(ctx, ns, d.Name, d.MTU, d.Addrs); err != nil {
		return err
	}
	return ns.LinkUp(d.Name)
}

// run builds the scenario's namespaces, traces the ones named by Trace
// while the traffic is sent, and returns what was seen.
func (r *Runner) run(ctx context.Context, s *Scenario) ([]*Observed, Env, []string, error) {
	env := Env{Kernel: r.Release}
	var notes []string
	for _, rule := range s.Rules {
		if err := ToolAvailable(rule.Tool); err != nil {
			return nil, env, notes, fmt.Errorf("rules need %w", err)
		}
	}
	if len(s.Devices) > 0 || slices.ContainsFunc(s.Veths, func(v Veth) bool { return v.A.MTU+v.B.MTU > 0 }) {
		if err := ToolAvailable(ToolIP); err != nil {
			return nil, env, notes, fmt.Errorf("devices and MTUs need %w", err)
		}
	}
	if s.TracesSeveral() && r.AllSources == nil {
		return nil, env, notes, errors.New("this runner cannot trace several namespaces (no AllSources)")
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
	col := &collector{names: map[uint32]string{}, several: s.TracesSeveral()}
	for _, name := range s.Trace {
		col.names[top.ns[name].Inode] = name
	}
	var sources []fate.Source
	var status []fate.SourceStatus
	if col.several {
		sources, status, err = r.AllSources()
	} else {
		traced := top.ns[s.Trace[0]]
		sources, status, err = r.Sources(traced.Inode, "/run/netns/"+traced.Name)
	}
	if err != nil {
		return nil, env, notes, fmt.Errorf("choosing sources: %w", err)
	}
	for _, src := range sources {
		env.Running = append(env.Running, src.Observers()...)
	}
	for _, st := range status {
		notes = append(notes, fmt.Sprintf("source %s not running: %s", st.Name, st.Reason))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The sender goroutine owns sendNotes and sendErr until sent is closed.
	var sendNotes []string
	var sendErr error
	sent := make(chan struct{})
	ready := false
	sum, err := capture.Run(ctx, capture.Config{
		Now:       r.Now,
		Sources:   sources,
		FatesOnly: true,
		Status:    status,
		Renderer:  col,
		Ready: func() error {
			ready = true
			go func() {
				defer close(sent)
				sendNotes, sendErr = r.send(ctx, s, top)
				if sendErr == nil {
					r.wait(ctx, s, col, env)
				}
				cancel()
			}()
			return nil
		},
	}, nil)
	cancel()
	if ready {
		<-sent
	}
	notes = append(notes, sendNotes...)
	if err != nil {
		return nil, env, notes, fmt.Errorf("tracing: %w", err)
	}
	if sendErr != nil {
		return nil, env, notes, fmt.Errorf("sending traffic: %w", sendErr)
	}
	if sum != nil {
		env.Summary = &CaptureSummary{Lost: sum.Lost, Unknowns: sum.UnknownReasons()}
	}
	notes = append(notes, col.nowhereNotes(s)...)
	return col.snapshot(), env, notes, nil
}

// send runs the traffic steps in order.
func (r *Runner) send(ctx context.Context, s *Scenario, top *topology) ([]string, error) {
	var notes []string
	for _, t := range s.Traffic {
		if t.Close != "" {
			// Closed by a thread of the listener's namespace, as its
			// process would.
			l := top.listeners[t.Close]
			if err := top.ns[l.netns].Do(l.Close); err != nil {
				return notes, fmt.Errorf("closing listener %s: %w", t.Close, err)
			}
			continue
		}
		n, err := send(ctx, top.ns[t.From], t)
		notes = append(notes, n...)
		if err != nil {
			return notes, err
		}
	}
	return notes, nil
}

// wait returns once every expectation is met (known gaps aside) and the
// settle time has passed, or after the scenario's timeout.
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
			if Check(s, col.snapshot(), env, nil, "").Status.Passed() {
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
