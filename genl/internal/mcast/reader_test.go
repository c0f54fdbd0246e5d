package mcast_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
	"github.com/pktfate/pktfate/genl/internal/mcast/mcasttest"
)

var _ mcast.Conn = (*mcasttest.Conn)(nil)

var (
	errUnexpected = errors.New("unexpected test message")
	errMalformed  = errors.New("malformed test message")
	errRejected   = errors.New("command the decoder rejects")
)

const (
	testFamilyID = 0x21
	testGroupID  = 5
	cmdEvent     = 1
	cmdOther     = 2
)

// event is what the test decoder fills: the command and the attribute
// bytes of one message.
type event struct {
	cmd  uint8
	data string
}

func decodeEvent(e *event, gm genetlink.Message) error {
	if gm.Header.Command != cmdEvent {
		return errRejected
	}
	e.cmd, e.data = gm.Header.Command, string(gm.Data)
	return nil
}

func message(t *testing.T, familyID uint16, cmd uint8, data string) netlink.Message {
	t.Helper()
	b, err := (&genetlink.Message{Header: genetlink.Header{Command: cmd, Version: 1}, Data: []byte(data)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(familyID)}, Data: b}
}

func testConfig(conn mcast.Conn) mcast.Config {
	return mcast.Config{
		Family: "TEST", FamilyID: testFamilyID, Group: "events", GroupID: testGroupID,
		ReadBuffer: 1 << 20, MessageBuffer: 4096,
		Unexpected: errUnexpected, Malformed: errMalformed,
		Dial: func() (mcast.Conn, error) { return conn, nil },
	}
}

func listen(t *testing.T, conn *mcasttest.Conn) *mcast.Reader[*event] {
	t.Helper()
	r, err := mcast.Listen(testConfig(conn), decodeEvent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestListenJoinsGroup(t *testing.T) {
	conn := mcasttest.NewConn()
	r := listen(t, conn)
	if got := conn.Joined(); !reflect.DeepEqual(got, []uint32{testGroupID}) {
		t.Errorf("joined %v, want [%d]", got, testGroupID)
	}
	if r.ReadBuffer() != 0 {
		t.Errorf("ReadBuffer() = %d on a socket without a descriptor, want 0", r.ReadBuffer())
	}
}

// TestListenJoinErrors: a refused join names the capability and wraps
// os.ErrPermission; any other failure names the group; both close the
// socket.
func TestListenJoinErrors(t *testing.T) {
	for _, tc := range []struct {
		errno  unix.Errno
		isPerm bool
	}{{unix.EPERM, true}, {unix.EINVAL, false}} {
		conn := mcasttest.NewConn()
		conn.FailJoin(os.NewSyscallError("setsockopt", tc.errno))
		_, err := mcast.Listen(testConfig(conn), decodeEvent)
		if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), `joining TEST "events" multicast group`) {
			t.Errorf("%v: err = %v, want it wrapped, naming family and group", tc.errno, err)
		}
		if errors.Is(err, os.ErrPermission) != tc.isPerm || strings.Contains(err.Error(), "CAP_SYS_ADMIN") != tc.isPerm {
			t.Errorf("%v: err = %v, want os.ErrPermission and CAP_SYS_ADMIN: %v", tc.errno, err, tc.isPerm)
		}
		if !conn.Closed() {
			t.Errorf("%v: socket left open after a failed join", tc.errno)
		}
	}
}

func TestListenDialError(t *testing.T) {
	cfg := testConfig(nil)
	cfg.Dial = func() (mcast.Conn, error) { return nil, unix.EMFILE }
	if _, err := mcast.Listen(cfg, decodeEvent); !errors.Is(err, unix.EMFILE) {
		t.Fatalf("err = %v, want the dial error", err)
	}
}

// TestReadCountsLosses: ENOBUFS is counted and reading goes on; messages of
// another family, messages that are no generic netlink message and messages
// the decoder refuses are counted and skipped, each with its error; the tap
// sees them all.
func TestReadCountsLosses(t *testing.T) {
	ok := func(data string) netlink.Message { return message(t, testFamilyID, cmdEvent, data) }
	foreign := message(t, 0x42, cmdEvent, "foreign")
	short := netlink.Message{Header: netlink.Header{Type: testFamilyID}, Data: []byte{1, 2}}
	rejected := message(t, testFamilyID, cmdOther, "rejected")
	conn := mcasttest.NewConn(
		mcasttest.Read{Msgs: []netlink.Message{foreign, ok("a")}},
		mcasttest.Read{Err: unix.ENOBUFS},
		mcasttest.Read{Msgs: []netlink.Message{short, ok("b")}},
		mcasttest.Read{Err: unix.ENOBUFS},
		mcasttest.Read{Msgs: []netlink.Message{rejected, ok("c"), ok("d")}},
	)
	r := listen(t, conn)
	var tapped int
	r.Tap = func(netlink.Message) { tapped++ }

	steps := []struct {
		data         string
		overruns     uint64
		decodeErrors uint64
		last         error
	}{
		{"a", 0, 1, errUnexpected},
		{"b", 1, 2, errMalformed},
		{"c", 2, 3, errRejected},
		{"d", 2, 3, errRejected},
	}
	var e event
	for _, s := range steps {
		if err := r.Read(&e); err != nil {
			t.Fatalf("Read before %q: %v", s.data, err)
		}
		if e.cmd != cmdEvent || e.data != s.data {
			t.Errorf("read %+v, want data %q", e, s.data)
		}
		if r.Overruns() != s.overruns || r.DecodeErrors() != s.decodeErrors || !errors.Is(r.LastDecodeError(), s.last) {
			t.Errorf("after %q: overruns %d, decode errors %d (last %v); want %d, %d, %v",
				s.data, r.Overruns(), r.DecodeErrors(), r.LastDecodeError(), s.overruns, s.decodeErrors, s.last)
		}
	}
	if err := r.Read(&e); !errors.Is(err, mcast.ErrClosed) {
		t.Errorf("Read after the last message: %v, want ErrClosed", err)
	}
	if tapped != 7 {
		t.Errorf("tap saw %d messages, want 7", tapped)
	}
}

func TestReadUnexpectedError(t *testing.T) {
	r := listen(t, mcasttest.NewConn(mcasttest.Read{Err: unix.EIO}))
	var e event
	err := r.Read(&e)
	if !errors.Is(err, unix.EIO) || errors.Is(err, mcast.ErrClosed) || !strings.Contains(err.Error(), "reading TEST events") {
		t.Fatalf("Read: %v, want EIO wrapped, naming the family", err)
	}
}

func TestCloseEndsRead(t *testing.T) {
	conn := mcasttest.NewConn(mcasttest.Read{Msgs: []netlink.Message{message(t, testFamilyID, cmdEvent, "late")}})
	r := listen(t, conn)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var e event
	if err := r.Read(&e); !errors.Is(err, mcast.ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
}

// realGroup returns a Config for the generic netlink controller's "notify"
// group: present on every kernel, joinable without privileges, and quiet
// unless a family registers.
func realGroup(t *testing.T) mcast.Config {
	t.Helper()
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Skipf("no generic netlink socket: %v", err)
	}
	defer c.Close()
	f, err := c.GetFamily("nlctrl")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range f.Groups {
		if g.Name == "notify" {
			return mcast.Config{
				Family: f.Name, FamilyID: f.ID, Group: g.Name, GroupID: g.ID,
				ReadBuffer: 1 << 20, MessageBuffer: 32 << 10,
				Unexpected: errUnexpected, Malformed: errMalformed,
			}
		}
	}
	t.Fatalf("nlctrl has no notify group: %+v", f.Groups)
	return mcast.Config{}
}

// TestRealSocket: on a kernel socket the receive buffer is sized (root
// forces past net.core.rmem_max), a deadline ends Read with
// os.ErrDeadlineExceeded, and Close ends a Read that waits for multicast.
func TestRealSocket(t *testing.T) {
	r, err := mcast.Listen(realGroup(t), decodeEvent)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := r.ReadBuffer(); os.Geteuid() == 0 && n < 1<<20 {
		t.Errorf("receive buffer %d as root, want at least 1 MiB", n)
	} else if n == 0 {
		t.Error("receive buffer unknown on a kernel socket")
	}

	// A family registering meanwhile (the kernel matrix loads modules)
	// sends a notification; readAll passes over what decodes.
	readAll := func() error {
		var e event
		for {
			if err := r.Read(&e); err != nil {
				return err
			}
		}
	}
	if err := r.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := readAll(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}

	if err := r.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- readAll() }()
	time.Sleep(50 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, mcast.ErrClosed) {
			t.Errorf("Read after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}
