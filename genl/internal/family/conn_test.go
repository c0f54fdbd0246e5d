package family

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const (
	cmdGet   = 1
	cmdStart = 2
	cmdNew   = 3 // reply to GET
	cmdOther = 9 // not in Commands
	attrX    = 1
)

var (
	errBusy      = errors.New("already running")
	errMalformed = errors.New("malformed TEST message")
)

var testFamily = genetlink.Family{
	ID: 0x1c, Name: "TEST", Version: 3,
	Groups: []genetlink.MulticastGroup{{ID: 2, Name: "other"}, {ID: 4, Name: "events"}},
}

func testSpec() Spec {
	return Spec{
		Name: "TEST", Version: 3, Group: "events",
		Absent:   " (the test module is not loaded: load it)",
		Commands: []string{cmdGet: "GET", cmdStart: "START", cmdNew: "NEW"},
		Also: func(cmd uint8, err error) error {
			if cmd == cmdStart && errors.Is(err, unix.EAGAIN) {
				return errBusy
			}
			return nil
		},
		Malformed: errMalformed,
	}
}

func TestInit(t *testing.T) {
	c, err := Init(genltest.Dial(genltest.ServeFamily(testFamily, nil)), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Family.ID != testFamily.ID || c.Family.Version != 3 || c.Group != 4 {
		t.Errorf("family %+v, group %d; want ID %#x, version 3, group 4", c.Family, c.Group, testFamily.ID)
	}
}

func TestInitFamilyMissing(t *testing.T) {
	conn := genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(unix.ENOENT))
	})
	_, err := Init(conn, testSpec())
	if !errors.Is(err, os.ErrNotExist) ||
		!strings.Contains(err.Error(), "generic netlink family TEST not registered (the test module is not loaded: load it): ") {
		t.Fatalf("err = %v, want os.ErrNotExist naming the family and why", err)
	}
}

func TestInitResolveError(t *testing.T) {
	conn := genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(unix.EIO))
	})
	_, err := Init(conn, testSpec())
	if !errors.Is(err, unix.EIO) || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "resolving generic netlink family TEST") {
		t.Fatalf("err = %v, want EIO naming the family", err)
	}
}

// TestInitCheck: Check vets the family before the group is looked up, and
// its error is returned as it is.
func TestInitCheck(t *testing.T) {
	errVersion := errors.New("version 3: rebuild")
	spec := testSpec()
	spec.Check = func(f genetlink.Family) error {
		if f.Version != 2 {
			return errVersion
		}
		return nil
	}
	f := testFamily
	f.Groups = nil
	if _, err := Init(genltest.Dial(genltest.ServeFamily(f, nil)), spec); err != errVersion {
		t.Fatalf("err = %v, want the Check error", err)
	}
}

func TestInitNoGroup(t *testing.T) {
	f := testFamily
	f.Groups = f.Groups[:1]
	_, err := Init(genltest.Dial(genltest.ServeFamily(f, nil)), testSpec())
	if err == nil || !strings.Contains(err.Error(), `generic netlink family TEST has no "events" multicast group`) {
		t.Fatalf("err = %v, want a missing group error", err)
	}
}

// request is what the fake saw of one request.
type request struct {
	greq genetlink.Message
	nreq netlink.Message
}

// serve answers GET with one reply, START with an ack or errno, and
// records every request.
func serve(seen *[]request, errno *unix.Errno) genltest.Func {
	return genltest.ServeFamily(testFamily, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if greq.Header.Command == 0 {
			// nltest asks for "multicast" messages after an ack-only reply.
			return nil, io.EOF
		}
		*seen = append(*seen, request{greq, nreq})
		if *errno != 0 {
			return nil, genltest.Error(int(*errno))
		}
		if greq.Header.Command == cmdGet {
			return []genetlink.Message{{Header: genetlink.Header{Command: cmdGet, Version: 3}, Data: []byte{4, 0, 9, 0}}}, nil
		}
		return nil, io.EOF
	})
}

func testConn(t *testing.T, seen *[]request, errno *unix.Errno) *Conn {
	t.Helper()
	c, err := Init(genltest.Dial(serve(seen, errno)), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestExecute: the request carries the family ID, the spec's version, the
// command, the flags and the encoded attributes; the replies come back.
func TestExecute(t *testing.T) {
	var seen []request
	var errno unix.Errno
	c := testConn(t, &seen, &errno)
	if _, err := c.Execute(cmdStart, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) { ae.Uint32(attrX, 7) }); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Execute(cmdGet, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Header.Command != cmdGet || len(msgs[0].Data) != 4 {
		t.Errorf("GET replies %+v", msgs)
	}
	if len(seen) != 2 {
		t.Fatalf("%d requests, want 2", len(seen))
	}
	start, get := seen[0], seen[1]
	if start.nreq.Header.Type != netlink.HeaderType(testFamily.ID) ||
		start.nreq.Header.Flags&(netlink.Request|netlink.Acknowledge) != netlink.Request|netlink.Acknowledge ||
		start.greq.Header != (genetlink.Header{Command: cmdStart, Version: 3}) {
		t.Errorf("START request %+v / %+v", start.nreq.Header, start.greq.Header)
	}
	ad, err := netlink.NewAttributeDecoder(start.greq.Data)
	if err != nil || !ad.Next() || ad.Type() != attrX || ad.Uint32() != 7 || ad.Next() {
		t.Errorf("START attributes %x (%v)", start.greq.Data, err)
	}
	if get.greq.Header.Command != cmdGet || len(get.greq.Data) != 0 || get.nreq.Header.Flags&netlink.Acknowledge != 0 {
		t.Errorf("GET request %+v / %+v, data %x", get.nreq.Header, get.greq.Header, get.greq.Data)
	}
}

// TestExecuteErrors: errors name the family and the command, EPERM and
// EACCES the capability, Spec.Also adds its error; an attribute that does
// not encode sends nothing.
func TestExecuteErrors(t *testing.T) {
	var seen []request
	var errno unix.Errno
	c := testConn(t, &seen, &errno)
	for _, tc := range []struct {
		cmd     uint8
		errno   unix.Errno
		text    string
		perm    bool
		wrapped error
	}{
		{cmdStart, unix.EPERM, "TEST START needs CAP_NET_ADMIN: ", true, nil},
		{cmdGet, unix.EACCES, "TEST GET needs CAP_NET_ADMIN: ", true, nil},
		{cmdStart, unix.EAGAIN, "TEST START: already running: ", false, errBusy},
		{cmdGet, unix.EAGAIN, "TEST GET: ", false, nil},
		{cmdOther, unix.EINVAL, "TEST command 9: ", false, nil},
	} {
		errno = tc.errno
		_, err := c.Execute(tc.cmd, netlink.Acknowledge, nil)
		if !errors.Is(err, tc.errno) || !strings.HasPrefix(err.Error(), tc.text) || errors.Is(err, os.ErrPermission) != tc.perm {
			t.Errorf("command %d, %v: err = %v, want %q, os.ErrPermission %v", tc.cmd, tc.errno, err, tc.text, tc.perm)
		}
		if (tc.wrapped != nil) != errors.Is(err, errBusy) {
			t.Errorf("command %d, %v: err = %v, want errBusy wrapped: %v", tc.cmd, tc.errno, err, tc.wrapped != nil)
		}
	}

	errEncode := errors.New("bad attribute")
	n := len(seen)
	_, err := c.Execute(cmdStart, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Nested(attrX, func(*netlink.AttributeEncoder) error { return errEncode })
	})
	if !errors.Is(err, errEncode) || !strings.HasPrefix(err.Error(), "encoding TEST START: ") {
		t.Errorf("encode failure: %v", err)
	}
	if len(seen) != n {
		t.Error("a request went out although its attributes did not encode")
	}
}

// TestGet: one reply of the expected command decodes through parse; a
// missing or foreign reply, attributes that do not decode and a parse
// failure wrap Spec.Malformed and say what was read; a failed request
// comes back as Execute maps it.
func TestGet(t *testing.T) {
	var replies []genetlink.Message
	var errno unix.Errno
	conn := genltest.Dial(genltest.ServeFamily(testFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		if greq.Header.Command != cmdGet || len(greq.Data) != 0 {
			t.Errorf("request %+v, data %x; want GET without attributes", greq.Header, greq.Data)
		}
		if errno != 0 {
			return nil, genltest.Error(int(errno))
		}
		if len(replies) == 0 {
			return nil, io.EOF
		}
		return replies, nil
	}))
	c, err := Init(conn, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errParse := errors.New("attribute X missing")
	parse := func(ad *netlink.AttributeDecoder) (uint32, error) {
		var x uint32
		var seen bool
		for ad.Next() {
			if ad.Type() == attrX {
				x, seen = ad.Uint32(), true
			}
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
		if !seen {
			return 0, errParse
		}
		return x, nil
	}
	attrs := func(fn func(*netlink.AttributeEncoder)) []byte {
		ae := netlink.NewAttributeEncoder()
		fn(ae)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reply := func(cmd uint8, data []byte) genetlink.Message {
		return genetlink.Message{Header: genetlink.Header{Command: cmd, Version: 3}, Data: data}
	}
	good := attrs(func(ae *netlink.AttributeEncoder) { ae.Uint32(attrX, 42) })

	replies = []genetlink.Message{reply(cmdNew, good)}
	if x, err := Get(c, cmdGet, cmdNew, "things", parse); err != nil || x != 42 {
		t.Fatalf("Get = %d, %v; want 42", x, err)
	}

	for _, tc := range []struct {
		name    string
		replies []genetlink.Message
		text    string
		also    error
	}{
		{"no reply", nil, "reading TEST things: malformed TEST message: want one NEW reply, got 0 messages", nil},
		{"two replies", []genetlink.Message{reply(cmdNew, good), reply(cmdNew, good)}, "want one NEW reply, got 2 messages", nil},
		{"other command", []genetlink.Message{reply(cmdGet, good)}, "want one NEW reply, got 1 messages", nil},
		{"cut attribute", []genetlink.Message{reply(cmdNew, good[:6])}, "reading TEST things: malformed TEST message: ", nil},
		{"parse error", []genetlink.Message{reply(cmdNew, attrs(func(ae *netlink.AttributeEncoder) { ae.Uint32(attrX+1, 1) }))},
			"reading TEST things: malformed TEST message: attribute X missing", errParse},
	} {
		replies = tc.replies
		x, err := Get(c, cmdGet, cmdNew, "things", parse)
		if x != 0 || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tc.text) || (tc.also != nil && !errors.Is(err, tc.also)) {
			t.Errorf("%s: Get = %d, %v; want %q wrapping errMalformed", tc.name, x, err, tc.text)
		}
	}

	errno = unix.EPERM
	if _, err := Get(c, cmdGet, cmdNew, "things", parse); !errors.Is(err, os.ErrPermission) || errors.Is(err, errMalformed) ||
		!strings.HasPrefix(err.Error(), "TEST GET needs CAP_NET_ADMIN: ") {
		t.Errorf("Get of a refused request: %v", err)
	}
}
