package dropmon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testSession(t *testing.T, k *fakeKernel, cfg SessionConfig, alive func(marker) bool) (*Session, error) {
	t.Helper()
	c := testClient(t, k, nil)
	if alive == nil {
		alive = func(marker) bool { t.Error("marker consulted"); return true }
	}
	return newSession(c, cfg, alive)
}

func TestSessionStartsAndStops(t *testing.T) {
	k := newFakeKernel()
	k.dropped = 5
	markerPath := filepath.Join(t.TempDir(), "run", "dropmon.pid")
	s, err := testSession(t, k, SessionConfig{Config: Config{Mode: ModePacket, TruncLen: 128}, MarkerPath: markerPath}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Passive() || s.Recovered() || s.Drops() != DropsSoftware {
		t.Errorf("passive %v recovered %v drops %s", s.Passive(), s.Recovered(), s.Drops())
	}
	if s.Config() != (Config{Mode: ModePacket, TruncLen: 128, QueueLen: 1000}) {
		t.Errorf("config %+v", s.Config())
	}
	m, err := os.ReadFile(markerPath)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := parseMarker(m)
	if err != nil || mk.pid != os.Getpid() || mk.drops != DropsSoftware || mk.boot == "" || mk.start == 0 {
		t.Errorf("marker %q: %+v, %v", m, mk, err)
	}
	k.mu.Lock()
	k.dropped = 12
	k.mu.Unlock()
	if l, err := s.Loss(); err != nil || l.Queue != 7 {
		t.Errorf("Loss() = %+v, %v; want 7 queue drops since the start", l, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sw, hw := k.running(); sw || hw {
		t.Error("Close did not stop what the session started")
	}
	if _, err := os.Stat(markerPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker left: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestSessionRestoresConfig: a session that set its own queue length and
// alert mode puts back the configuration it found when it stops: NET_DM
// keeps its configuration while stopped, and a queue of one asked for one
// capture would otherwise make the next one lose alerts.
func TestSessionRestoresConfig(t *testing.T) {
	k := newFakeKernel()
	found := Config{Mode: ModeSummary, QueueLen: 1000}
	k.cfg = found
	s, err := testSession(t, k, SessionConfig{Config: Config{Mode: ModePacket, TruncLen: 142, QueueLen: 1}, MarkerPath: "-"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	during := k.cfg
	k.mu.Unlock()
	if during != (Config{Mode: ModePacket, TruncLen: 142, QueueLen: 1}) {
		t.Errorf("while running: %+v", during)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	after := k.cfg
	k.mu.Unlock()
	if after != found {
		t.Errorf("after Close the kernel's configuration is %+v, want the one found, %+v", after, found)
	}
}

func TestSessionPassiveWithoutMarker(t *testing.T) {
	k := newFakeKernel()
	k.sw = true // dropwatch runs
	k.cfg = Config{Mode: ModeSummary, QueueLen: 1000}
	s, err := testSession(t, k, SessionConfig{Config: Config{Mode: ModePacket}, MarkerPath: filepath.Join(t.TempDir(), "m")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Passive() || s.Drops() != 0 {
		t.Errorf("passive %v drops %s, want passive", s.Passive(), s.Drops())
	}
	if s.Config().Mode != ModeSummary {
		t.Errorf("passive session reports mode %s, want the owner's summary", s.Config().Mode)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sw, _ := k.running(); !sw {
		t.Error("a passive session stopped somebody else's monitoring")
	}
	for _, c := range k.callLog() {
		if strings.HasPrefix(c, "STOP") {
			t.Errorf("passive session sent %s", c)
		}
	}
}

func TestSessionPassiveMarkerAlive(t *testing.T) {
	k := newFakeKernel()
	k.sw = true
	path := filepath.Join(t.TempDir(), "m")
	other, err := selfMarker(DropsSoftware)
	if err != nil {
		t.Fatal(err)
	}
	other.pid = 4242
	if err := os.WriteFile(path, []byte(other.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := testSession(t, k, SessionConfig{MarkerPath: path}, func(m marker) bool { return m.pid == 4242 })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Passive() || s.Recovered() {
		t.Errorf("passive %v recovered %v, want passive: the owner lives", s.Passive(), s.Recovered())
	}
	if b, _ := os.ReadFile(path); string(b) != other.String() {
		t.Errorf("marker changed to %q", b)
	}
}

func TestSessionRecoversOrphan(t *testing.T) {
	k := newFakeKernel()
	k.sw, k.hw = true, true // a killed pktfate left sw+hw monitoring
	path := filepath.Join(t.TempDir(), "m")
	dead, err := selfMarker(DropsSoftware | DropsHardware)
	if err != nil {
		t.Fatal(err)
	}
	dead.pid = 4243
	if err := os.WriteFile(path, []byte(dead.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := testSession(t, k, SessionConfig{Config: Config{Mode: ModePacket, TruncLen: 64}, MarkerPath: path},
		func(m marker) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if s.Passive() || !s.Recovered() || s.Config().TruncLen != 64 {
		t.Errorf("passive %v recovered %v config %+v, want an active recovered session", s.Passive(), s.Recovered(), s.Config())
	}
	if sw, hw := k.running(); !sw || hw {
		t.Errorf("running sw=%v hw=%v, want only the new session's software drops", sw, hw)
	}
	if mk, err := readMarkerFile(path); err != nil || mk.pid != os.Getpid() {
		t.Errorf("marker %+v, %v: want this process", mk, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sw, _ := k.running(); sw {
		t.Error("recovered session not stopped on Close")
	}
}

func readMarkerFile(path string) (marker, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return marker{}, err
	}
	return parseMarker(b)
}

func TestSessionMarkerOfEarlierBoot(t *testing.T) {
	k := newFakeKernel()
	k.sw = true
	path := filepath.Join(t.TempDir(), "m")
	old := marker{pid: 4244, start: 1, boot: "00000000-0000-0000-0000-000000000000", drops: DropsSoftware}
	if err := os.WriteFile(path, []byte(old.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := testSession(t, k, SessionConfig{MarkerPath: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Passive() {
		t.Error("monitoring of unknown origin: want passive")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker of an earlier boot kept: %v", err)
	}
}

func TestSessionHardwareFallback(t *testing.T) {
	k := newFakeKernel()
	k.noDevlink = true
	s, err := testSession(t, k, SessionConfig{Drops: DropsSoftware | DropsHardware, MarkerPath: "-"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Drops() != DropsSoftware {
		t.Errorf("drops %s, want sw after EOPNOTSUPP for hw", s.Drops())
	}
	s.Close()
	if sw, _ := k.running(); sw {
		t.Error("not stopped")
	}
	// With devlink both run and both stop.
	k = newFakeKernel()
	s, err = testSession(t, k, SessionConfig{Drops: DropsSoftware | DropsHardware, MarkerPath: "-"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Drops() != DropsSoftware|DropsHardware {
		t.Errorf("drops %s", s.Drops())
	}
	s.Close()
	if sw, hw := k.running(); sw || hw {
		t.Error("not stopped")
	}
}

func TestSessionPermission(t *testing.T) {
	k := newFakeKernel()
	k.unprivileged = true
	_, err := testSession(t, k, SessionConfig{MarkerPath: "-"}, nil)
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseMarker(t *testing.T) {
	for _, bad := range []string{"", "pid=1", "pid=x start=1 boot=b drops=1", "pid=1 start=1 boot=b drops=0", "junk"} {
		if _, err := parseMarker([]byte(bad)); err == nil {
			t.Errorf("parseMarker(%q): no error", bad)
		}
	}
	m := marker{pid: 12, start: 34, boot: "b", drops: DropsHardware}
	if got, err := parseMarker([]byte(m.String())); err != nil || got != m {
		t.Errorf("round trip: %+v, %v", got, err)
	}
}

func TestProcessAlive(t *testing.T) {
	self, err := selfMarker(DropsSoftware)
	if err != nil {
		t.Fatal(err)
	}
	if !processAlive(self) {
		t.Error("this process is not alive")
	}
	reused := self
	reused.start++
	if processAlive(reused) {
		t.Error("a pid with another start time counts as alive")
	}
	gone := self
	gone.pid = 1 << 22 // above pid_max's hard limit
	if processAlive(gone) {
		t.Error("a missing pid counts as alive")
	}
}

func TestSessionMarkerUnwritable(t *testing.T) {
	k := newFakeKernel()
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The marker's folder would be a regular file: writing fails.
	s, err := testSession(t, k, SessionConfig{MarkerPath: filepath.Join(blocker, "dropmon.pid")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Passive() || s.MarkerError() == nil {
		t.Errorf("passive %v marker error %v: want an active session that says the marker failed", s.Passive(), s.MarkerError())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sw, _ := k.running(); sw {
		t.Error("not stopped")
	}
}

// TestSessionBaselineBeforeStart: alerts the queue drops right after START
// count as this session's losses: the baseline is read before it.
func TestSessionBaselineBeforeStart(t *testing.T) {
	k := newFakeKernel()
	k.dropped, k.dropOnStart = 5, 3
	s, err := testSession(t, k, SessionConfig{Config: Config{Mode: ModePacket}, MarkerPath: "-"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if l, err := s.Loss(); err != nil || l.Queue != 3 {
		t.Errorf("Loss() = %+v, %v; want the 3 drops at START counted", l, err)
	}
}
