package dropmon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
	"github.com/pktfate/pktfate/genl/internal/mcast/mcasttest"
)

// testFamily is NET_DM as the fakes register it (the ID is dynamic in the
// kernel; the recorded fixtures carry 0x19 or whatever the kernel chose).
var testFamily = genetlink.Family{
	ID: 0x19, Name: familyName, Version: familyVersion,
	Groups: []genetlink.MulticastGroup{{ID: 7, Name: eventsGroup}},
}

// fakeKernel models drop_monitor's global state and its errno results
// (net/core/drop_monitor.c): CONFIG while monitoring gives EBUSY, START of
// what runs gives EAGAIN, STOP of what does not run succeeds, hardware
// drops without devlink give EOPNOTSUPP, and privileged commands give EPERM
// without CAP_NET_ADMIN.
type fakeKernel struct {
	mu           sync.Mutex
	sw, hw       bool
	cfg          Config
	dropped      uint64
	unprivileged bool
	noDevlink    bool
	calls        []string
	// stats, when set, is the raw STATS_NEW reply (a fixture).
	stats []byte
	// dropOnStart is added to dropped when monitoring starts: alerts the
	// queue drops right after START.
	dropOnStart uint64
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{cfg: Config{Mode: ModeSummary, QueueLen: 1000}}
}

func (k *fakeKernel) serve(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cmd := greq.Header.Command
	if cmd == cmdUnspec {
		// nltest asks for "multicast" messages after an ack-only reply.
		return nil, io.EOF
	}
	ad, err := netlink.NewAttributeDecoder(greq.Data)
	if err != nil {
		return nil, err
	}
	var mode *uint8
	var trunc, queue *uint32
	var sw, hw bool
	for ad.Next() {
		switch ad.Type() {
		case attrAlertMode:
			v := ad.Uint8()
			mode = &v
		case attrTruncLen:
			v := ad.Uint32()
			trunc = &v
		case attrQueueLen:
			v := ad.Uint32()
			queue = &v
		case attrSWDrops:
			sw = true
		case attrHWDrops:
			hw = true
		}
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	if !sw && !hw {
		sw = true // "To maintain backward compatibility"
	}
	k.calls = append(k.calls, fmt.Sprintf("%s sw=%v hw=%v", cmdNames[cmd], sw, hw))
	switch cmd {
	case cmdConfig, cmdStart, cmdStop:
		if k.unprivileged {
			return nil, genltest.Error(int(unix.EPERM))
		}
	}
	switch cmd {
	case cmdConfig:
		if k.sw || k.hw {
			return nil, genltest.Error(int(unix.EBUSY))
		}
		if mode != nil {
			if *mode > 1 {
				return nil, genltest.Error(int(unix.EINVAL))
			}
			k.cfg.Mode = AlertMode(*mode)
		}
		if trunc != nil {
			k.cfg.TruncLen = *trunc
		}
		if queue != nil {
			k.cfg.QueueLen = *queue
		}
		return nil, io.EOF
	case cmdStart:
		if sw && k.sw {
			return nil, genltest.Error(int(unix.EAGAIN))
		}
		if hw && (k.noDevlink || k.hw) {
			errno := unix.EAGAIN
			if k.noDevlink {
				errno = unix.EOPNOTSUPP
			}
			return nil, genltest.Error(int(errno)) // and the software part is undone
		}
		k.sw = k.sw || sw
		k.hw = k.hw || hw
		k.dropped += k.dropOnStart
		return nil, io.EOF
	case cmdStop:
		if sw {
			k.sw = false
		}
		if hw {
			k.hw = false
		}
		return nil, io.EOF
	case cmdConfigGet:
		ae := netlink.NewAttributeEncoder()
		ae.Uint8(attrAlertMode, uint8(k.cfg.Mode))
		ae.Uint32(attrTruncLen, k.cfg.TruncLen)
		ae.Uint32(attrQueueLen, k.cfg.QueueLen)
		b, err := ae.Encode()
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdConfigNew, Version: familyVersion}, Data: b}}, err
	case cmdStatsGet:
		if k.stats != nil {
			return []genetlink.Message{{Header: genetlink.Header{Command: cmdStatsNew, Version: familyVersion}, Data: k.stats}}, nil
		}
		ae := netlink.NewAttributeEncoder()
		ae.Nested(attrStats, func(nae *netlink.AttributeEncoder) error {
			nae.Uint64(statsAttrDropped, k.dropped)
			return nil
		})
		ae.Nested(attrHWStats, func(nae *netlink.AttributeEncoder) error {
			nae.Uint64(statsAttrDropped, 0)
			return nil
		})
		b, err := ae.Encode()
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdStatsNew, Version: familyVersion}, Data: b}}, err
	}
	return nil, genltest.Error(int(unix.EOPNOTSUPP))
}

func (k *fakeKernel) running() (sw, hw bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sw, k.hw
}

func (k *fakeKernel) callLog() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.calls...)
}

// fixtureMessage reads a fixture as the netlink message the socket returns.
func fixtureMessage(tb testing.TB, path string) netlink.Message {
	tb.Helper()
	b := readHex(tb, path)
	b = append(b, make([]byte, (4-len(b)%4)%4)...)
	var m netlink.Message
	if err := m.UnmarshalBinary(b); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return m
}

func testClient(t *testing.T, k *fakeKernel, ev *mcasttest.Conn) *Client {
	t.Helper()
	c, err := initClient(genltest.Dial(genltest.ServeFamily(testFamily, k.serve)))
	if err != nil {
		t.Fatal(err)
	}
	if ev == nil {
		ev = mcasttest.NewConn()
	}
	c.dialEvents = func() (mcast.Conn, error) { return ev, nil }
	t.Cleanup(func() { c.Close() })
	return c
}

func TestInitClientFamilyMissing(t *testing.T) {
	conn := genltest.Dial(func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(unix.ENOENT))
	})
	_, err := initClient(conn)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "NET_DM") {
		t.Errorf("error %q does not name the family", err)
	}
}

func TestInitClientNoEventsGroup(t *testing.T) {
	f := testFamily
	f.Groups = nil
	_, err := initClient(genltest.Dial(genltest.ServeFamily(f, newFakeKernel().serve)))
	if err == nil || !strings.Contains(err.Error(), "events") {
		t.Fatalf("err = %v, want a missing group error", err)
	}
}

func TestClientCommands(t *testing.T) {
	k := newFakeKernel()
	c := testClient(t, k, nil)
	want := Config{Mode: ModePacket, TruncLen: 128, QueueLen: 2000}
	if err := c.SetConfig(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Config()
	if err != nil || got != want {
		t.Fatalf("Config() = %+v, %v; want %+v", got, err, want)
	}
	// QueueLen 0 keeps the kernel's value.
	if err := c.SetConfig(Config{Mode: ModeSummary}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Config(); got.QueueLen != 2000 || got.Mode != ModeSummary || got.TruncLen != 0 {
		t.Errorf("after SetConfig with QueueLen 0: %+v", got)
	}
	if err := c.Start(DropsSoftware | DropsHardware); err != nil {
		t.Fatal(err)
	}
	if sw, hw := k.running(); !sw || !hw {
		t.Errorf("running sw=%v hw=%v after START sw+hw", sw, hw)
	}
	if err := c.Stop(DropsHardware); err != nil {
		t.Fatal(err)
	}
	if sw, hw := k.running(); !sw || hw {
		t.Errorf("running sw=%v hw=%v after STOP hw", sw, hw)
	}
	if err := c.Stop(DropsSoftware); err != nil {
		t.Fatal(err)
	}
	wantCalls := []string{
		"CONFIG sw=true hw=false", "CONFIG_GET sw=true hw=false", "CONFIG sw=true hw=false", "CONFIG_GET sw=true hw=false",
		"START sw=true hw=true", "STOP sw=false hw=true", "STOP sw=true hw=false",
	}
	if got := k.callLog(); !reflect.DeepEqual(got, wantCalls) {
		t.Errorf("calls\n%q\nwant\n%q", got, wantCalls)
	}
}

func TestClientStats(t *testing.T) {
	k := newFakeKernel()
	k.dropped = 17
	c := testClient(t, k, nil)
	st, err := c.Stats()
	if err != nil || st != (Stats{Dropped: 17, HasHW: true}) {
		t.Fatalf("Stats() = %+v, %v", st, err)
	}
	// The hand-built fixture of the kernel's reply.
	k.stats = attrs(t, readHex(t, filepath.Join(fixtureDir, "uapi", "stats_new.hex")))
	st, err = c.Stats()
	if err != nil || st != (Stats{Dropped: 42, HasHW: true}) {
		t.Fatalf("Stats() from fixture = %+v, %v", st, err)
	}
	k.stats = []byte{1, 2, 3}
	if _, err := c.Stats(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Stats() of a malformed reply: %v, want ErrMalformed", err)
	}
}

func TestClientErrors(t *testing.T) {
	k := newFakeKernel()
	c := testClient(t, k, nil)
	if err := c.Start(DropsSoftware); err != nil {
		t.Fatal(err)
	}
	err := c.Start(DropsSoftware)
	if !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EAGAIN) {
		t.Errorf("START while running: %v, want ErrBusy and EAGAIN", err)
	}
	err = c.SetConfig(Config{Mode: ModePacket})
	if !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("CONFIG while running: %v, want ErrBusy and EBUSY", err)
	}
	k.unprivileged = true
	for name, f := range map[string]func() error{
		"CONFIG": func() error { return c.SetConfig(Config{}) },
		"START":  func() error { return c.Start(DropsSoftware) },
		"STOP":   func() error { return c.Stop(DropsSoftware) },
	} {
		err := f()
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") || errors.Is(err, ErrBusy) {
			t.Errorf("%s without CAP_NET_ADMIN: %v", name, err)
		}
	}
	// The unprivileged reads still work.
	if _, err := c.Config(); err != nil {
		t.Error(err)
	}
	if _, err := c.Stats(); err != nil {
		t.Error(err)
	}
}

func TestListenJoinsOwnSocket(t *testing.T) {
	ev := mcasttest.NewConn()
	c := testClient(t, newFakeKernel(), ev)
	e, err := c.Listen(ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := ev.Joined(); !reflect.DeepEqual(got, []uint32{7}) {
		t.Errorf("joined %v, want the events group 7", got)
	}
}

func TestListenPermission(t *testing.T) {
	ev := mcasttest.NewConn()
	ev.FailJoin(os.NewSyscallError("setsockopt", unix.EPERM))
	c := testClient(t, newFakeKernel(), ev)
	_, err := c.Listen(ListenConfig{})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_SYS_ADMIN") || !strings.Contains(err.Error(), `NET_DM "events"`) {
		t.Fatalf("err = %v, want os.ErrPermission naming CAP_SYS_ADMIN and the group", err)
	}
}

func TestEventsRead(t *testing.T) {
	dir := filepath.Join(fixtureDir, "uapi")
	pkt := fixtureMessage(t, filepath.Join(dir, "packet_sw_udp4.hex"))
	sum := fixtureMessage(t, filepath.Join(dir, "summary.hex"))
	bad := fixtureMessage(t, filepath.Join(dir, "bad_no_timestamp.hex"))
	other := pkt
	other.Header.Type = 0x42 // another family's message: not ours
	ev := mcasttest.NewConn(
		mcasttest.Read{Msgs: []netlink.Message{pkt}},
		mcasttest.Read{Err: unix.ENOBUFS},
		mcasttest.Read{Err: unix.ENOBUFS},
		mcasttest.Read{Msgs: []netlink.Message{bad, sum, other}},
		mcasttest.Read{Msgs: []netlink.Message{pkt}},
	)
	c := testClient(t, newFakeKernel(), ev)
	e, err := c.Listen(ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var a Alert
	var kinds []AlertKind
	for {
		err := e.Read(&a)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, a.Kind)
	}
	if want := []AlertKind{KindPacket, KindSummary, KindPacket}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
	if e.Overruns() != 2 {
		t.Errorf("overruns %d, want 2", e.Overruns())
	}
	if e.DecodeErrors() != 2 || !errors.Is(e.LastDecodeError(), ErrUnexpected) {
		t.Errorf("decode errors %d (last %v), want 2 ending with ErrUnexpected", e.DecodeErrors(), e.LastDecodeError())
	}
	if a.Packet.Reason != "NO_SOCKET" {
		t.Errorf("last alert %+v", a.Packet)
	}
}
