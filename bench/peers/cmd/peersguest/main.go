// Command peersguest is the guest side of pktfate's peer benchmark
// (bench/peers, make bench-peers): inside one VM it runs every tool of the
// tools file, round after round, each over the same probe phase and UDP
// flood, and sends the runs to the host as the artifact peers.json (plus
// the raw output of each tool's first run, raw-<tool>.txt, from which the
// parsers' test fixtures are recorded).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/bench/peers"
	"github.com/pktfate/pktfate/genl/dropmon"
	"github.com/pktfate/pktfate/internal/vm/artifact"
)

// probePort is the bound, never-read UDP port the probes go to.
const probePort = 10

type config struct {
	tools    string
	flood    string
	rounds   int
	probe    time.Duration
	duration time.Duration
	work     string
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-netdm-unread" {
		if err := netdmUnread(); err != nil {
			fmt.Fprintln(os.Stderr, "peersguest -netdm-unread:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	fs := flag.NewFlagSet("peersguest", flag.ContinueOnError)
	fs.StringVar(&cfg.tools, "tools", "/pktfate/peers/tools.txt", "tools file")
	fs.StringVar(&cfg.flood, "flood", "/pktfate/peers/flood", "the static flood sender")
	fs.IntVar(&cfg.rounds, "rounds", 3, "runs of each tool")
	fs.DurationVar(&cfg.probe, "probe", 3*time.Second, "probe phase: from the tool's start to the flood (guest time)")
	fs.DurationVar(&cfg.duration, "duration", 2*time.Second, "flood length (guest time)")
	fs.StringVar(&cfg.work, "work", "/tmp/peers", "scratch folder")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "peersguest:", err)
		os.Exit(1)
	}
}

// Report is what the guest sends to the host.
type Report struct {
	Kernel   string            `json:"kernel"`
	Line     string            `json:"line"`
	Versions map[string]string `json:"versions"`
	Rounds   int               `json:"rounds"`
	ProbeNS  uint64            `json:"probe_ns"`
	FloodNS  uint64            `json:"flood_ns"`
	Runs     []peers.Run       `json:"runs"`
}

func run(cfg config) error {
	f, err := os.Open(cfg.tools)
	if err != nil {
		return err
	}
	tools, err := peers.ParseTools(f)
	f.Close()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return err
	}
	format, err := os.ReadFile("/sys/kernel/tracing/events/skb/kfree_skb/format")
	if err != nil {
		return fmt.Errorf("reading the kfree_skb tracepoint's format: %w", err)
	}
	names, err := peers.ParseReasonNames(string(format))
	if err != nil {
		return err
	}
	if err := artifact.Write(os.Stdout, "kfree_skb-format.txt", format); err != nil {
		return err
	}
	sink, err := probeSink()
	if err != nil {
		return err
	}
	defer sink.Close()
	rep := Report{Kernel: os.Getenv("PKTFATE_KERNEL_RELEASE"), Line: os.Getenv("PKTFATE_VM"), Versions: versions(),
		Rounds: cfg.rounds, ProbeNS: uint64(cfg.probe), FloodNS: uint64(cfg.duration)}
	d := &driver{cfg: cfg, names: names}
	for round := 1; round <= cfg.rounds; round++ {
		for _, t := range tools {
			r := d.runTool(t, round)
			r.Kernel = rep.Kernel
			fmt.Printf("peers: round %d %-45s pps=%.0f noports=%d flood=%d probes=%d/%d other=%d lost=%d ready=%.3fs(%v) file=%.3fs(%v) %s\n",
				round, t.Name, r.PPS, r.NoPorts, r.Counts.Flood, r.Counts.Probe, r.RcvBuf, r.Counts.Other, r.Lost,
				float64(r.ReadyProbeNS)/1e9, r.ReadyProbeOK, float64(r.ReadyFileNS)/1e9, r.ReadyFileOK, r.Err)
			rep.Runs = append(rep.Runs, r)
		}
	}
	data, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return err
	}
	return artifact.Write(os.Stdout, "peers.json", data)
}

// probeSink binds the probes' port with the smallest receive buffer and
// fills it, so that every probe from now on is dropped with
// SOCKET_RCVBUFF (counted in Udp RcvbufErrors). It is never read.
func probeSink() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: probePort})
	if err != nil {
		return nil, fmt.Errorf("binding the probe sink: %w", err)
	}
	if err := c.SetReadBuffer(1); err != nil {
		c.Close()
		return nil, err
	}
	out, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: probePort})
	if err != nil {
		c.Close()
		return nil, err
	}
	defer out.Close()
	before, err := snmp()
	if err != nil {
		c.Close()
		return nil, err
	}
	for i := 0; i < 1000; i++ {
		_, _ = out.Write([]byte("pktfate-fill"))
		now, err := snmp()
		if err != nil {
			c.Close()
			return nil, err
		}
		if now.RcvbufErrors > before.RcvbufErrors {
			return c, nil
		}
	}
	c.Close()
	return nil, errors.New("the probe sink's receive buffer never filled")
}

func snmp() (peers.SNMP, error) {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return peers.SNMP{}, err
	}
	return peers.ParseSNMP(string(data))
}

func monoNS() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

type driver struct {
	cfg   config
	names map[int]string
}

// started is one tool while it runs.
type started struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *bytes.Buffer
	done           chan error
}

func (d *driver) path(name string) string { return filepath.Join(d.cfg.work, name) }

// command is how a tool is started.
func (d *driver) command(t peers.Tool) (*exec.Cmd, error) {
	switch t.Kind {
	case peers.KindPerf:
		return exec.Command("perf", append(append([]string{"record"}, t.Args...), "-o", d.path("perf.data"))...), nil
	case peers.KindBpftraceMap:
		return exec.Command("bpftrace", append(t.Args, "-e", peers.BpftraceMapProgram)...), nil
	case peers.KindBpftracePrintf:
		return exec.Command("bpftrace", append(t.Args, "-e", peers.BpftracePrintfProgram)...), nil
	case peers.KindDropwatch:
		return exec.Command("dropwatch", t.Args...), nil
	case peers.KindNetdmUnread:
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return exec.Command(self, "-netdm-unread"), nil
	case peers.KindPktfate, peers.KindPktfateRaw:
		bin := os.Getenv("PKTFATE_BIN")
		if bin == "" {
			return nil, errors.New("PKTFATE_BIN unset: pktfate was not built")
		}
		args := append([]string{"trace"}, t.Args...)
		if t.Kind == peers.KindPktfateRaw {
			args = append(args, "--output-raw", d.path("pktfate.raw"))
		} else {
			args = append(args, "--output-json", "--output-file", d.path("pktfate.ndjson"))
		}
		args = append(args, "--ready-file", d.path("ready"))
		return exec.Command(bin, args...), nil
	}
	return nil, fmt.Errorf("unknown kind %q", t.Kind)
}

func (d *driver) runTool(t peers.Tool, round int) peers.Run {
	r := peers.Run{Tool: t.Name, Kind: t.Kind, Round: round}
	for _, f := range []string{"perf.data", "pktfate.ndjson", "pktfate.raw", "ready", "probes.txt"} {
		os.Remove(d.path(f))
	}
	s0, err := snmp()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	var st *started
	var sent []uint64
	var start uint64
	var realStart time.Time
	if t.Kind != peers.KindBaseline {
		cmd, err := d.command(t)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		realStart, start = time.Now(), monoNS()
		if st, err = startTool(cmd, t.Kind == peers.KindDropwatch); err != nil {
			r.Err = err.Error()
			return r
		}
		if t.Kind == peers.KindDropwatch {
			_, _ = io.WriteString(st.stdin, "set alertmode packet\nstart\n")
		}
		out, err := exec.Command(d.cfg.flood, "-probe", fmt.Sprint(d.cfg.probe.Milliseconds()), "1000", fmt.Sprint(probePort), d.path("probes.txt")).CombinedOutput()
		if err != nil {
			r.Err = fmt.Sprintf("probe sender: %v: %s", err, out)
		}
		data, _ := os.ReadFile(d.path("probes.txt"))
		if sent, err = peers.ParseProbeTimes(string(data)); err != nil && r.Err == "" {
			r.Err = err.Error()
		}
		r.Probes = uint64(len(sent))
	}
	s1, _ := snmp()
	out, err := exec.Command(d.cfg.flood, fmt.Sprint(d.cfg.duration.Milliseconds())).CombinedOutput()
	s2, _ := snmp()
	if fl, perr := peers.ParseFlood(string(out)); err == nil && perr == nil {
		r.Sent, r.NS, r.PPS = fl.Sent, fl.NS, fl.PPS()
	} else if r.Err == "" {
		r.Err = fmt.Sprintf("flood: %v %v: %s", err, perr, out)
	}
	_ = s1
	if st == nil {
		r.NoPorts = s2.NoPorts - s0.NoPorts
		return r
	}
	if err := st.stop(t.Kind); err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	s3, _ := snmp()
	r.NoPorts = s3.NoPorts - s0.NoPorts
	r.RcvBuf = s3.RcvbufErrors - s0.RcvbufErrors
	raw, err := d.read(t, st, &r)
	if err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	r.ReadyProbeNS, r.ReadyProbeOK = peers.ReadyByProbes(sent, r.Counts.Probe, start)
	if t.Kind == peers.KindPktfate || t.Kind == peers.KindPktfateRaw {
		if fi, err := os.Stat(d.path("ready")); err == nil {
			// Guest wall and monotonic clocks run together under
			// instruction counting: the ready file's time, from the
			// tool's start.
			if dt := fi.ModTime().Sub(realStart); dt >= 0 {
				r.ReadyFileNS, r.ReadyFileOK = uint64(dt), true
			}
		}
	}
	if round == 1 {
		name := "raw-" + slug(t.Name) + ".txt"
		if err := artifact.Write(os.Stdout, name, raw); err != nil {
			fmt.Fprintln(os.Stderr, "peersguest:", err)
		}
	}
	return r
}

// netdmUnread is the netdm-unread tool (peersguest -netdm-unread): it
// configures NET_DM as pktfate's dropmon source does (packet mode,
// pktfate's default truncation), joins the events group with a socket of
// the smallest buffer that it never reads, starts software drop
// monitoring and waits for SIGINT; then it stops monitoring, puts the
// configuration back and prints what was dropped. The kernel does all
// its work for each drop (the clone, the queue, the alert built with the
// symbol of the drop point, the multicast, which finds the socket full):
// the sender's rate meanwhile bounds what any reader of NET_DM's packet
// alerts can reach.
func netdmUnread() error {
	c, err := dropmon.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	was, err := c.Config()
	if err != nil {
		return err
	}
	if err := c.SetConfig(dropmon.Config{Mode: dropmon.ModePacket, TruncLen: 128 + 14, QueueLen: was.QueueLen}); err != nil {
		return err
	}
	defer c.SetConfig(was)
	ev, err := c.Listen(dropmon.ListenConfig{ReadBuffer: 1})
	if err != nil {
		return err
	}
	defer ev.Close()
	before, err := c.Stats()
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	if err := c.Start(dropmon.DropsSoftware); err != nil {
		return err
	}
	<-sig
	if err := c.Stop(dropmon.DropsSoftware); err != nil {
		return err
	}
	after, err := c.Stats()
	if err != nil {
		return err
	}
	drops, err := ev.SocketDrops()
	if err != nil {
		return err
	}
	fmt.Printf("netdm-unread: socket_drops=%d queue_dropped=%d\n", drops, after.Dropped-before.Dropped)
	return nil
}

// startTool starts cmd with its output captured; with stdin, a pipe for
// commands (dropwatch).
func startTool(cmd *exec.Cmd, stdin bool) (*started, error) {
	st := &started{cmd: cmd, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = st.stdout, st.stderr
	if stdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		st.stdin = w
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	go func() { st.done <- cmd.Wait() }()
	return st, nil
}

// stop ends a tool the way a user does (Ctrl-C; dropwatch then its stats
// and exit commands) and waits for it.
func (st *started) stop(kind peers.Kind) error {
	_ = st.cmd.Process.Signal(syscall.SIGINT)
	if st.stdin != nil {
		time.Sleep(500 * time.Millisecond)
		_, _ = io.WriteString(st.stdin, "stats\nexit\n")
		st.stdin.Close()
	}
	// The tools drain what they queued before they exit; dropwatch may
	// never: under overload the ack of its STOP request is lost in its
	// overrun netlink socket and it waits for it forever (its NET_DM
	// session is stopped all the same).
	limit := 5 * time.Minute
	if kind == peers.KindDropwatch {
		limit = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	select {
	case err := <-st.done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return err
		}
		return nil
	case <-ctx.Done():
		_ = st.cmd.Process.Kill()
		<-st.done
		return fmt.Errorf("%s did not exit within %s of SIGINT: killed (its own stats are missing)", kind, limit)
	}
}

// read parses what the tool reported into r and returns its raw output
// (cut to its head and tail) for the record.
func (d *driver) read(t peers.Tool, st *started, r *peers.Run) ([]byte, error) {
	var raw bytes.Buffer
	fmt.Fprintf(&raw, "# %s (%s) on %s: stdout, then stderr\n", t.Name, t.Kind, os.Getenv("PKTFATE_KERNEL_RELEASE"))
	var err error
	switch t.Kind {
	case peers.KindPerf:
		cmd := exec.Command("perf", "script", "-i", d.path("perf.data"), "-F", "trace")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		pipe, perr := cmd.StdoutPipe()
		if perr != nil {
			return nil, perr
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		var head headTail
		r.Counts, err = peers.PerfScript(io.TeeReader(pipe, &head))
		werr := cmd.Wait()
		var samples uint64
		samples, r.Lost, _ = peers.PerfRecord(st.stderr.String() + stderr.String())
		r.LostHow = "perf's lost chunks/samples"
		if err == nil && werr != nil {
			err = fmt.Errorf("perf script: %w: %s", werr, stderr.String())
		}
		if err == nil && samples != r.Counts.Total() {
			err = fmt.Errorf("perf record wrote %d samples, perf script printed %d", samples, r.Counts.Total())
		}
		fmt.Fprintf(&raw, "## perf record\n%s%s## perf script -F trace\n%s## perf script stderr\n%s", st.stdout, st.stderr, head.String(), stderr.String())
		return raw.Bytes(), err
	case peers.KindBpftraceMap:
		r.Counts, r.Lost, err = peers.BpftraceMap(bytes.NewReader(st.stdout.Bytes()), d.names)
		r.LostHow = "bpftrace's Lost N events"
	case peers.KindBpftracePrintf:
		r.Counts, r.Lost, err = peers.BpftracePrintf(bytes.NewReader(st.stdout.Bytes()), d.names)
		r.LostHow = "bpftrace's Lost N events"
	case peers.KindDropwatch:
		var loss peers.DropwatchLoss
		// dropwatch prints its receive errors on stdout or stderr.
		r.Counts, loss, err = peers.Dropwatch(io.MultiReader(bytes.NewReader(st.stdout.Bytes()), strings.NewReader("\n"), bytes.NewReader(st.stderr.Bytes())))
		r.Lost, r.Overruns = loss.TailDropped, loss.Overruns
		r.LostHow = "NET_DM tail drops (its stats command); +N ENOBUFS: netlink receive failures it printed, alerts lost uncounted"
	case peers.KindNetdmUnread:
		var socket, queue uint64
		if _, err = fmt.Sscanf(st.stdout.String(), "netdm-unread: socket_drops=%d queue_dropped=%d", &socket, &queue); err != nil {
			err = fmt.Errorf("netdm-unread's report %q: %w (stderr: %s)", st.stdout.String(), err, st.stderr.String())
		}
		r.Lost = socket + queue
		r.LostHow = "alerts the never-read socket dropped (sk_drops) + NET_DM's queue drops: none is read, by design"
	case peers.KindPktfate, peers.KindPktfateRaw:
		var report bytes.Buffer
		if t.Kind == peers.KindPktfateRaw {
			// Rendered after the run, as a user would: not measured.
			// Exit status 3 or 4 says the capture lost events or may
			// have: the summary says which.
			cmd := exec.Command(os.Getenv("PKTFATE_BIN"), "report", "--output-json", d.path("pktfate.raw"))
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &report, &stderr
			if err := cmd.Run(); err != nil && report.Len() == 0 {
				return nil, fmt.Errorf("pktfate report of the raw capture: %v: %s", err, stderr.String())
			}
			if err := os.WriteFile(d.path("pktfate.ndjson"), report.Bytes(), 0o600); err != nil {
				return nil, err
			}
		}
		f, ferr := os.Open(d.path("pktfate.ndjson"))
		if ferr != nil {
			return nil, ferr
		}
		var lost map[string]uint64
		var head headTail
		r.Counts, lost, err = peers.Pktfate(io.TeeReader(f, &head))
		f.Close()
		var names []string
		for k, v := range lost {
			r.Lost += v
			if v > 0 {
				names = append(names, fmt.Sprintf("%s=%d", k, v))
			}
		}
		r.LostHow = "sum of pktfate's lost counters " + strings.Join(names, " ")
		fmt.Fprintf(&raw, "## pktfate NDJSON\n%s## stdout\n%s## stderr\n%s", head.String(), st.stdout, st.stderr)
		return raw.Bytes(), err
	}
	var out headTail
	out.Write(st.stdout.Bytes())
	fmt.Fprintf(&raw, "## stdout\n%s## stderr\n%s", out.String(), st.stderr)
	return raw.Bytes(), err
}

// headTail keeps the first and last lines written to it.
type headTail struct {
	head, tail []string
	partial    string
	n          int
}

const keepLines = 40

func (h *headTail) Write(p []byte) (int, error) {
	s := h.partial + string(p)
	lines := strings.Split(s, "\n")
	h.partial = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		h.n++
		if len(h.head) < keepLines {
			h.head = append(h.head, l)
			continue
		}
		h.tail = append(h.tail, l)
		if len(h.tail) > keepLines {
			h.tail = h.tail[1:]
		}
	}
	return len(p), nil
}

func (h *headTail) String() string {
	var b strings.Builder
	for _, l := range h.head {
		b.WriteString(l + "\n")
	}
	if skipped := h.n - len(h.head) - len(h.tail); skipped > 0 {
		fmt.Fprintf(&b, "# ... %d lines left out\n", skipped)
	}
	for _, l := range h.tail {
		b.WriteString(l + "\n")
	}
	if h.partial != "" {
		b.WriteString(h.partial + "\n")
	}
	return b.String()
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	return strings.Trim(slugRE.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// versions names the tools' versions.
func versions() map[string]string {
	v := map[string]string{}
	for name, args := range map[string][]string{"perf": {"perf", "--version"}, "bpftrace": {"bpftrace", "--version"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err == nil {
			v[name] = strings.TrimSpace(string(out))
		}
	}
	if bin := os.Getenv("PKTFATE_BIN"); bin != "" {
		if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
			v["pktfate"] = strings.TrimSpace(string(out))
		}
	}
	return v
}
