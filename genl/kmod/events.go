package kmod

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultReadBuffer is the events socket's receive buffer unless
// ListenConfig says otherwise: 8 MiB holds several thousand DROP events
// (each a message of about 250 bytes in a socket buffer of about 1 KiB),
// more than the module's per-CPU queues hold at once.
const DefaultReadBuffer = 8 << 20

// messageBuffer is the user-space buffer for one datagram; a DROP event is
// about 250 bytes, the module sends each in a message of its own.
const messageBuffer = 32 << 10

// ErrClosed is returned by Events.Read once Events is closed.
var ErrClosed = net.ErrClosed

// ErrUnexpected is wrapped by the error for a message that is no DROP event.
var ErrUnexpected = errors.New("unexpected pktfate message")

// ListenConfig configures Listen.
type ListenConfig struct {
	// ReadBuffer is the receive buffer of the events socket in bytes
	// (SO_RCVBUF; as root SO_RCVBUFFORCE, which ignores net.core.rmem_max).
	// 0 means DefaultReadBuffer.
	ReadBuffer int
}

// eventConn is what Events needs of a netlink socket: *netlink.Conn, or a
// test double around an nltest connection.
type eventConn interface {
	Receive() ([]netlink.Message, error)
	JoinGroup(group uint32) error
	SetReadBuffer(bytes int) error
	SetReadDeadline(t time.Time) error
	SyscallConn() (syscall.RawConn, error)
	Close() error
}

func dialEventConn() (eventConn, error) {
	c, err := netlink.Dial(unix.NETLINK_GENERIC, &netlink.Config{MessageBufferSize: messageBuffer})
	if err != nil {
		return nil, fmt.Errorf("opening generic netlink socket for pktfate events: %w", err)
	}
	return c, nil
}

// Events reads DROP events from the module's events multicast group on a socket of
// its own. Create it with Client.Listen; it must be closed. Read is meant
// for one goroutine; Close and the counters may be called from any.
//
// Overruns of the socket's receive buffer (ENOBUFS: the kernel dropped
// events because the reader was too slow) are counted and reading goes on;
// so are messages that cannot be decoded.
type Events struct {
	c          eventConn
	family     uint16
	readBuffer int

	pending []netlink.Message
	next    int

	closed       atomic.Bool
	overruns     atomic.Uint64
	decodeErrors atomic.Uint64
	lastErr      atomic.Pointer[error]

	// tap, when set (tests), sees every message before it is decoded.
	tap func(netlink.Message)
}

// Listen opens a socket, sizes its receive buffer and joins the events
// group (CAP_SYS_ADMIN on current kernels: the error then wraps
// os.ErrPermission). Events flow only while reporting is enabled, whoever
// enabled it.
func (c *Client) Listen(cfg ListenConfig) (*Events, error) {
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	conn, err := c.dialEvents()
	if err != nil {
		return nil, err
	}
	e := &Events{c: conn, family: c.family.ID}
	// Size the buffer before joining, so that no burst meets the default.
	e.readBuffer, err = setReadBuffer(conn, cfg.ReadBuffer)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := conn.JoinGroup(c.group); err != nil {
		_ = conn.Close()
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("joining pktfate %q multicast group needs CAP_SYS_ADMIN: %w", eventsGroup, err)
		}
		return nil, fmt.Errorf("joining pktfate %q multicast group: %w", eventsGroup, err)
	}
	return e, nil
}

// setReadBuffer sets the socket's receive buffer, forcing past
// net.core.rmem_max when allowed, and returns the size the kernel reports
// (twice the request: it counts its bookkeeping). Sockets without a file
// descriptor (test doubles) are left alone.
func setReadBuffer(conn eventConn, size int) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, nil
	}
	var forceErr, getErr error
	got := 0
	err = rc.Control(func(fd uintptr) {
		forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		if forceErr != nil {
			forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		got, getErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err == nil {
		err = errors.Join(forceErr, getErr)
	}
	if err != nil {
		return 0, fmt.Errorf("sizing pktfate events socket receive buffer to %d bytes: %w", size, err)
	}
	return got, nil
}

// ReadBuffer returns the receive buffer size the kernel granted (0 when
// unknown).
func (e *Events) ReadBuffer() int { return e.readBuffer }

// Read blocks until the next event and decodes it into d, reusing
// d.Payload. It returns ErrClosed after Close, and an error wrapping
// os.ErrDeadlineExceeded when the deadline set with SetReadDeadline passes.
// To drain when stopping, set a deadline a little in the future (events
// leave the kernel from a work item, some time after the drop) and read until
// it passes; a deadline already past ends Read at once, even with events
// waiting in the socket.
// Buffer overruns and undecodable messages are counted, not returned.
func (e *Events) Read(d *Drop) error {
	for {
		for e.next < len(e.pending) {
			m := e.pending[e.next]
			e.next++
			if e.tap != nil {
				e.tap(m)
			}
			if err := e.decode(m, d); err != nil {
				e.decodeErrors.Add(1)
				e.lastErr.Store(&err)
				continue
			}
			return nil
		}
		e.pending, e.next = e.pending[:0], 0
		msgs, err := e.c.Receive()
		switch {
		case err == nil:
			e.pending = msgs
		case errors.Is(err, unix.ENOBUFS):
			// The kernel could not queue events for this socket: they are
			// lost, the socket stays usable.
			e.overruns.Add(1)
		case e.closed.Load(), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrClosed):
			// The socket package reports a close during a blocked read as
			// "use of closed file", which is neither of these.
			return ErrClosed
		default:
			return fmt.Errorf("reading pktfate events: %w", err)
		}
	}
}

func (e *Events) decode(m netlink.Message, d *Drop) error {
	if uint16(m.Header.Type) != e.family {
		return fmt.Errorf("%w: message type %d, want family %d", ErrUnexpected, m.Header.Type, e.family)
	}
	var gm genetlink.Message
	if err := gm.UnmarshalBinary(m.Data); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return d.decode(gm)
}

// SetReadDeadline sets the deadline for Read; the zero time means none.
func (e *Events) SetReadDeadline(t time.Time) error { return e.c.SetReadDeadline(t) }

// Overruns returns how many times the kernel reported ENOBUFS on the events
// socket: each time at least one event was lost.
func (e *Events) Overruns() uint64 { return e.overruns.Load() }

// DecodeErrors returns how many messages could not be decoded (or were no
// DROP events); LastDecodeError returns the last such error.
func (e *Events) DecodeErrors() uint64 { return e.decodeErrors.Load() }

// LastDecodeError returns the error of the last message Read skipped, or nil.
func (e *Events) LastDecodeError() error {
	if p := e.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close closes the socket and unblocks a Read in progress.
func (e *Events) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	return e.c.Close()
}
