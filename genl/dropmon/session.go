package dropmon

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultMarkerPath is where a Session that started monitoring records
// which process did (see Session).
const DefaultMarkerPath = "/run/pktfate/dropmon.pid"

// SessionConfig configures StartSession.
type SessionConfig struct {
	// Config is applied when this session starts monitoring (ignored when
	// it attaches passively). Mode ModePacket is what pktfate wants.
	Config Config
	// Drops selects what to monitor; 0 means DropsSoftware. When
	// DropsHardware is asked for and the kernel has no devlink, the session
	// falls back to software drops (see Session.Drops).
	Drops Drops
	// Listen configures the events socket.
	Listen ListenConfig
	// MarkerPath is the marker file; "" means DefaultMarkerPath, "-"
	// disables the marker (and with it the recovery after a kill -9).
	MarkerPath string
}

// Session is one pktfate's use of the global drop monitor: it either started
// monitoring (and must stop it) or attached passively to monitoring someone
// else runs (and must leave it alone). Create it with StartSession; it must
// be closed, on every exit path (SIGINT and SIGTERM included: cancel the
// reader and call Close).
//
// NET_DM has no owner: anybody with CAP_NET_ADMIN may STOP or reconfigure
// it, and nothing tells who started it. StartSession therefore tries CONFIG
// and START; when the kernel says monitoring already runs (ErrBusy) it only
// joins the events group, reports Passive() == true, and Close then stops
// nothing.
//
// Recovery after kill -9: a session that starts monitoring writes a marker
// file (DefaultMarkerPath) holding its pid, the process's start time (from
// /proc/<pid>/stat, against pid reuse), the boot id and the drops it
// started; Close removes it. A pktfate killed with SIGKILL leaves monitoring
// running and its marker behind. The next StartSession that finds monitoring
// busy reads the marker:
//   - marker of this boot whose process is gone (or whose pid now belongs
//     to another process): the session was orphaned by a dead pktfate; it
//     STOPs what the marker names, removes the marker and starts afresh
//     (Recovered() == true);
//   - marker whose process is alive: another pktfate owns monitoring; attach
//     passively;
//   - no marker (or one from an earlier boot, which is removed): somebody
//     else (dropwatch, a script) runs monitoring; attach passively.
//
// The rule errs towards passivity, with one known hole: if, after the crash,
// somebody else stopped the orphaned session and started their own, the next
// pktfate stops theirs once. Only processes sharing /run and the pid
// namespace see each other's markers.
type Session struct {
	client *Client
	events *Events
	cfg    SessionConfig

	passive   bool
	recovered bool
	started   Drops
	config    Config
	// prior is the configuration found before this session set its own
	// (nil when it could not be read): Close puts it back, so that a
	// queue length or alert mode asked for one capture does not outlive
	// it (NET_DM keeps its configuration while stopped).
	prior     *Config
	baseline  Stats
	marker    string
	markerErr error

	closeOnce sync.Once
	closeErr  error

	// alive reports whether the process of a marker runs; tests replace it.
	alive func(m marker) bool
}

// StartSession dials NET_DM, joins the events group and starts monitoring,
// or attaches passively when it already runs (see Session). Errors wrap
// os.ErrNotExist when the kernel has no drop monitor and os.ErrPermission
// when a capability is missing.
func StartSession(cfg SessionConfig) (*Session, error) {
	c, err := Dial()
	if err != nil {
		return nil, err
	}
	s, err := newSession(c, cfg, processAlive)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return s, nil
}

// newSession runs the session protocol on an open Client; on error it
// leaves the Client open.
func newSession(c *Client, cfg SessionConfig, alive func(marker) bool) (*Session, error) {
	if cfg.Drops == 0 {
		cfg.Drops = DropsSoftware
	}
	switch cfg.MarkerPath {
	case "":
		cfg.MarkerPath = DefaultMarkerPath
	case "-":
		cfg.MarkerPath = ""
	}
	s := &Session{client: c, cfg: cfg, alive: alive, marker: cfg.MarkerPath}
	// Join first: alerts of the first drops after START must not be missed.
	ev, err := c.Listen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	s.events = ev
	// The loss baseline comes before START: the queue's counters are
	// never reset, and alerts dropped between START and a later reading
	// would go uncounted.
	if s.baseline, err = c.Stats(); err != nil {
		_ = ev.Close()
		return nil, err
	}
	if err := s.start(); err != nil {
		_ = ev.Close()
		return nil, err
	}
	if s.config, err = c.Config(); err != nil {
		return nil, errors.Join(err, s.shutdown())
	}
	return s, nil
}

// start configures and starts monitoring, recovers an orphaned session, or
// settles for passive.
func (s *Session) start() error {
	err := s.configureAndStart()
	if !errors.Is(err, ErrBusy) {
		return err
	}
	if s.marker == "" {
		s.passive = true
		return nil
	}
	m, state, merr := readMarker(s.marker, s.alive)
	if merr != nil {
		// An unreadable marker proves nothing: stay passive.
		s.passive = true
		return nil
	}
	switch state {
	case markerOrphaned:
		if err := s.client.Stop(m.drops); err != nil {
			return fmt.Errorf("stopping the drop monitor session orphaned by pid %d: %w", m.pid, err)
		}
		_ = os.Remove(s.marker)
		s.recovered = true
		err = s.configureAndStart()
		if errors.Is(err, ErrBusy) {
			// Somebody started monitoring in between: theirs now.
			s.passive = true
			return nil
		}
		return err
	case markerStaleBoot:
		_ = os.Remove(s.marker)
	}
	s.passive = true
	return nil
}

func (s *Session) configureAndStart() error {
	if s.prior == nil {
		if prior, err := s.client.Config(); err == nil {
			s.prior = &prior
		}
	}
	if err := s.client.SetConfig(s.cfg.Config); err != nil {
		return err
	}
	drops := s.cfg.Drops
	err := s.client.Start(drops)
	if err != nil && drops&DropsHardware != 0 && errors.Is(err, unix.EOPNOTSUPP) {
		// No devlink in this kernel: the kernel undid the software part too.
		drops &^= DropsHardware
		if drops == 0 {
			return err
		}
		err = s.client.Start(drops)
	}
	if err != nil {
		return err
	}
	s.started = drops
	if s.marker != "" {
		if err := writeMarker(s.marker, drops); err != nil {
			// Monitoring works without the marker; only the recovery of a
			// kill -9 does not. Keep going and say so.
			s.markerErr = err
			s.marker = ""
		}
	}
	return nil
}

// MarkerError returns why the marker file could not be written (nil when it
// was, or when the session is passive): without it, a pktfate killed with
// SIGKILL leaves monitoring running and the next run attaches passively.
func (s *Session) MarkerError() error { return s.markerErr }

// Events returns the session's alert reader; Close closes it.
func (s *Session) Events() *Events { return s.events }

// Client returns the session's command client (for Stats and Config).
func (s *Session) Client() *Client { return s.client }

// Passive reports whether monitoring was already running and this session
// only listens: its Config is someone else's, and Close stops nothing.
func (s *Session) Passive() bool { return s.passive }

// Recovered reports whether this session stopped a session orphaned by a
// killed pktfate before starting its own.
func (s *Session) Recovered() bool { return s.recovered }

// Drops returns what this session started (0 when passive).
func (s *Session) Drops() Drops { return s.started }

// Config returns the drop monitor's configuration as read after starting
// (a passive session's alert mode may be ModeSummary).
func (s *Session) Config() Config { return s.config }

// Loss counts what the session lost, where.
type Loss struct {
	// Queue is packets the kernel did not report because its per-CPU queue
	// was full (STATS_GET, since the session started; a passive session
	// shares the counter with its owner).
	Queue, HWQueue uint64
	// Overruns is ENOBUFS on the events socket (each at least one alert).
	Overruns uint64
	// SocketDrops is the alerts the events socket could not hold, each
	// one (its sk_drops), unless SocketDropsErr says why it is unknown.
	SocketDrops    uint64
	SocketDropsErr error
	// Decode is messages that could not be decoded.
	Decode uint64
}

// Loss reads the kernel's counters and returns the losses since the session
// started.
func (s *Session) Loss() (Loss, error) {
	l := Loss{Overruns: s.events.Overruns(), Decode: s.events.DecodeErrors()}
	l.SocketDrops, l.SocketDropsErr = s.events.SocketDrops()
	st, err := s.client.Stats()
	if err != nil {
		return l, err
	}
	l.Queue = st.Dropped - min(st.Dropped, s.baseline.Dropped)
	l.HWQueue = st.HWDropped - min(st.HWDropped, s.baseline.HWDropped)
	return l, nil
}

// Close stops monitoring if this session started it (never otherwise),
// removes its marker and closes both sockets. It is safe to call more than
// once.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.shutdown(), s.client.Close())
	})
	return s.closeErr
}

// shutdown stops what the session started and closes the events socket,
// leaving the command socket open.
func (s *Session) shutdown() error {
	var errs []error
	if s.started != 0 {
		if err := s.client.Stop(s.started); err != nil {
			errs = append(errs, fmt.Errorf("stopping drop monitor: %w", err))
		} else {
			if s.marker != "" {
				errs = append(errs, removeOwnMarker(s.marker))
			}
			if s.prior != nil && *s.prior != s.config {
				if err := s.client.SetConfig(*s.prior); err != nil {
					errs = append(errs, fmt.Errorf("restoring the drop monitor's configuration: %w", err))
				}
			}
		}
		s.started = 0
	}
	if s.events != nil {
		errs = append(errs, s.events.Close())
	}
	return errors.Join(errs...)
}

// marker is the content of the marker file: one line
// "pid=<pid> start=<starttime> boot=<boot_id> drops=<n>".
type marker struct {
	pid   int
	start uint64 // field 22 of /proc/<pid>/stat, clock ticks since boot
	boot  string // /proc/sys/kernel/random/boot_id
	drops Drops
}

type markerState int

const (
	markerAbsent    markerState = iota
	markerAlive                 // its process runs: another pktfate owns monitoring
	markerOrphaned              // this boot, process gone: recover
	markerStaleBoot             // written before the last reboot: ignore
)

func (m marker) String() string {
	return fmt.Sprintf("pid=%d start=%d boot=%s drops=%d\n", m.pid, m.start, m.boot, m.drops)
}

func parseMarker(b []byte) (marker, error) {
	var m marker
	fields := strings.Fields(string(bytes.TrimSpace(b)))
	seen := 0
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return m, fmt.Errorf("marker field %q: want key=value", f)
		}
		var err error
		switch k {
		case "pid":
			m.pid, err = strconv.Atoi(v)
		case "start":
			m.start, err = strconv.ParseUint(v, 10, 64)
		case "boot":
			m.boot = v
		case "drops":
			var d uint64
			d, err = strconv.ParseUint(v, 10, 8)
			m.drops = Drops(d)
		default:
			continue
		}
		if err != nil {
			return m, fmt.Errorf("marker field %q: %w", f, err)
		}
		seen++
	}
	if seen != 4 || m.pid <= 0 || m.drops == 0 {
		return m, fmt.Errorf("marker %q incomplete", bytes.TrimSpace(b))
	}
	return m, nil
}

// readMarker reads the marker file and classifies it.
func readMarker(path string, alive func(marker) bool) (marker, markerState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return marker{}, markerAbsent, nil
	}
	if err != nil {
		return marker{}, markerAbsent, fmt.Errorf("reading drop monitor marker: %w", err)
	}
	m, err := parseMarker(b)
	if err != nil {
		return m, markerAbsent, fmt.Errorf("reading drop monitor marker %s: %w", path, err)
	}
	if boot, err := bootID(); err == nil && boot != m.boot {
		return m, markerStaleBoot, nil
	}
	if alive(m) {
		return m, markerAlive, nil
	}
	return m, markerOrphaned, nil
}

// writeMarker records this process as the owner of monitoring, atomically.
func writeMarker(path string, drops Drops) error {
	self, err := selfMarker(drops)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing drop monitor marker: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, self.pid)
	if err := os.WriteFile(tmp, []byte(self.String()), 0o644); err != nil {
		return fmt.Errorf("writing drop monitor marker: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing drop monitor marker: %w", err)
	}
	return nil
}

// removeOwnMarker removes the marker if this process wrote it.
func removeOwnMarker(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing drop monitor marker: %w", err)
	}
	if m, err := parseMarker(b); err != nil || m.pid != os.Getpid() {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing drop monitor marker: %w", err)
	}
	return nil
}

func selfMarker(drops Drops) (marker, error) {
	pid := os.Getpid()
	start, err := procStart(pid)
	if err != nil {
		return marker{}, err
	}
	boot, err := bootID()
	if err != nil {
		return marker{}, err
	}
	return marker{pid: pid, start: start, boot: boot, drops: drops}, nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("reading boot id: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// procStart returns field 22 (starttime) of /proc/<pid>/stat. The command
// name (field 2) may hold spaces and parentheses: parse after its last ')'.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading start time of pid %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("reading start time of pid %d: no command name in stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): starttime, field 22, is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("reading start time of pid %d: %d fields in stat", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// processAlive reports whether the marker's process still runs (and is the
// same process, not a reused pid).
func processAlive(m marker) bool {
	if err := unix.Kill(m.pid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	start, err := procStart(m.pid)
	if err != nil {
		// Gone between the two checks, or /proc hides it: a pid that
		// answered signal 0 counts as alive unless /proc says it is gone.
		return !errors.Is(err, os.ErrNotExist)
	}
	return start == m.start
}
