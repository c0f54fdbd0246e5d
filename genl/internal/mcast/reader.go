package mcast

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Reader.Read once the Reader is closed. It is
// net.ErrClosed, as the clients' ErrClosed are.
var ErrClosed = net.ErrClosed

// Conn is what a Reader needs of a netlink socket: *netlink.Conn, or a test
// double (mcasttest.Conn).
type Conn interface {
	Receive() ([]netlink.Message, error)
	JoinGroup(group uint32) error
	SetReadDeadline(t time.Time) error
	SyscallConn() (syscall.RawConn, error)
	Close() error
}

// Config says which group Listen joins and how the family's messages are
// told apart.
type Config struct {
	// Family is the family's name; errors name the family by it
	// ("joining NET_DM "events" multicast group: ...").
	Family string
	// FamilyID is the family's ID (dynamic, resolved by the caller): a
	// message of another type is a decode error wrapping Unexpected.
	FamilyID uint16
	// Group and GroupID are the multicast group to join.
	Group   string
	GroupID uint32
	// ReadBuffer is the socket's receive buffer in bytes (SO_RCVBUFFORCE,
	// which ignores net.core.rmem_max, or else SO_RCVBUF); the caller
	// applies its default.
	ReadBuffer int
	// MessageBuffer is the user-space buffer for one datagram: the
	// family's largest message must fit.
	MessageBuffer int
	// Unexpected and Malformed are the family's errors, wrapped by the
	// decode error of a message of another family and of one that is no
	// generic netlink message.
	Unexpected, Malformed error
	// Dial opens the socket; nil opens a generic netlink socket with
	// MessageBuffer. Tests pass a double.
	Dial func() (Conn, error)
}

// dial opens the socket: with cfg.Dial when set, else a generic netlink
// socket.
func (cfg Config) dial() (Conn, error) {
	if cfg.Dial != nil {
		return cfg.Dial()
	}
	c, err := netlink.Dial(unix.NETLINK_GENERIC, &netlink.Config{MessageBufferSize: cfg.MessageBuffer})
	if err != nil {
		return nil, fmt.Errorf("opening generic netlink socket for %s events: %w", cfg.Family, err)
	}
	return c, nil
}

// Reader reads one family's multicast messages and decodes them into a T
// (a pointer the caller reuses) with the decoder given to Listen. It must
// be closed. Read is meant for one goroutine; Close and the counters may
// be called from any.
type Reader[T any] struct {
	c          Conn
	cfg        Config
	decode     func(T, genetlink.Message) error
	readBuffer int

	pending []netlink.Message
	next    int
	// batch reads many datagrams a system call (recvmmsg) straight from
	// the socket; nil for a Conn without a file descriptor (test
	// doubles), which is read with Receive.
	batch *batch

	closed       atomic.Bool
	overruns     atomic.Uint64
	decodeErrors atomic.Uint64
	lastErr      atomic.Pointer[error]

	// Tap, when set (tests, recording fixtures), sees every message
	// before it is decoded. Set it before Read runs.
	Tap func(netlink.Message)
}

// Listen opens a socket, sizes its receive buffer and joins cfg's group.
// When joining is refused (CAP_SYS_ADMIN on current kernels for both of
// pktfate's families) the error wraps os.ErrPermission and names the
// capability. decode fills a T from one of the family's generic netlink
// messages; its errors are counted, not returned by Read.
func Listen[T any](cfg Config, decode func(T, genetlink.Message) error) (*Reader[T], error) {
	conn, err := cfg.dial()
	if err != nil {
		return nil, err
	}
	r := &Reader[T]{c: conn, cfg: cfg, decode: decode}
	if _, real := conn.(*netlink.Conn); real {
		if rc, err := conn.SyscallConn(); err == nil {
			r.batch = newBatch(rc, cfg.MessageBuffer)
		}
	}
	// Size the buffer before joining, so that no burst meets the default.
	r.readBuffer, err = setReadBuffer(conn, cfg.ReadBuffer)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("sizing %s events socket receive buffer to %d bytes: %w", cfg.Family, cfg.ReadBuffer, err)
	}
	if err := conn.JoinGroup(cfg.GroupID); err != nil {
		_ = conn.Close()
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("joining %s %q multicast group needs CAP_SYS_ADMIN: %w", cfg.Family, cfg.Group, err)
		}
		return nil, fmt.Errorf("joining %s %q multicast group: %w", cfg.Family, cfg.Group, err)
	}
	return r, nil
}

// setReadBuffer sets the socket's receive buffer, forcing past
// net.core.rmem_max when allowed, and returns the size the kernel reports
// (twice the request: it counts its bookkeeping). Sockets without a file
// descriptor (test doubles) are left alone.
func setReadBuffer(conn Conn, size int) (int, error) {
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
		return 0, err
	}
	return got, nil
}

// ReadBuffer returns the receive buffer size the kernel granted (0 when
// unknown).
func (r *Reader[T]) ReadBuffer() int { return r.readBuffer }

// Read blocks until the next message that decodes and decodes it into v.
// It returns ErrClosed after Close, and an error wrapping
// os.ErrDeadlineExceeded when the deadline set with SetReadDeadline passes
// (a deadline already past ends Read at once, even with messages waiting
// in the socket). Buffer overruns and undecodable messages are counted,
// not returned.
func (r *Reader[T]) Read(v T) error {
	for {
		for r.next < len(r.pending) {
			m := r.pending[r.next]
			r.next++
			if r.Tap != nil {
				r.Tap(m)
			}
			if err := r.decodeMessage(m, v); err != nil {
				r.decodeErrors.Add(1)
				r.lastErr.Store(&err)
				continue
			}
			return nil
		}
		r.pending, r.next = r.pending[:0], 0
		var err error
		if r.batch != nil {
			var truncated int
			r.pending, truncated, err = r.batch.receive(r.pending)
			if truncated > 0 {
				r.decodeErrors.Add(uint64(truncated))
				terr := fmt.Errorf("%w: a message longer than the %d-byte buffer was cut, or its netlink length overran its datagram", r.cfg.Malformed, r.cfg.MessageBuffer)
				r.lastErr.Store(&terr)
			}
		} else {
			var msgs []netlink.Message
			if msgs, err = r.c.Receive(); err == nil {
				r.pending = msgs
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOBUFS):
			// The kernel could not queue messages for this socket: they
			// are lost, the socket stays usable.
			r.overruns.Add(1)
		case r.closed.Load(), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrClosed):
			// The socket package reports a close during a blocked read as
			// "use of closed file", which is neither of these.
			return ErrClosed
		default:
			return fmt.Errorf("reading %s events: %w", r.cfg.Family, err)
		}
	}
}

func (r *Reader[T]) decodeMessage(m netlink.Message, v T) error {
	if uint16(m.Header.Type) != r.cfg.FamilyID {
		return fmt.Errorf("%w: message type %d, want family %d", r.cfg.Unexpected, m.Header.Type, r.cfg.FamilyID)
	}
	var gm genetlink.Message
	if err := gm.UnmarshalBinary(m.Data); err != nil {
		return fmt.Errorf("%w: %w", r.cfg.Malformed, err)
	}
	return r.decode(v, gm)
}

// SetReadDeadline sets the deadline for Read; the zero time means none.
func (r *Reader[T]) SetReadDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }

// Overruns returns how many times the kernel reported ENOBUFS on the
// socket: each time at least one message was lost.
func (r *Reader[T]) Overruns() uint64 { return r.overruns.Load() }

// SocketDrops returns how many messages the kernel dropped at this socket
// because its receive buffer was full: every one, where Overruns counts
// the ENOBUFS reports, of which one stands for a whole burst. It is the
// socket's sk_drops (SO_MEMINFO, Linux 4.12+), which netlink raises for
// each multicast message it could not queue; the socket is this Reader's
// own, so the count starts at zero.
func (r *Reader[T]) SocketDrops() (uint64, error) {
	rc, err := r.c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("the %s events socket has no file descriptor to ask its drop count: %w", r.cfg.Family, err)
	}
	var info [unix.SK_MEMINFO_VARS]uint32
	var gerr error
	err = rc.Control(func(fd uintptr) {
		n := uint32(len(info) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e != 0:
			gerr = e
		case n < (unix.SK_MEMINFO_DROPS+1)*4:
			gerr = fmt.Errorf("SO_MEMINFO returned %d bytes, no drop count", n)
		}
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return 0, fmt.Errorf("reading the %s events socket's drop count (SO_MEMINFO): %w", r.cfg.Family, err)
	}
	return uint64(info[unix.SK_MEMINFO_DROPS]), nil
}

// DecodeErrors returns how many messages Read skipped because they were
// not the family's or did not decode.
func (r *Reader[T]) DecodeErrors() uint64 { return r.decodeErrors.Load() }

// LastDecodeError returns the error of the last message Read skipped, or
// nil.
func (r *Reader[T]) LastDecodeError() error {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close closes the socket and unblocks a Read in progress. Closing twice
// does nothing.
func (r *Reader[T]) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	return r.c.Close()
}

// batchSlots is how many datagrams one recvmmsg reads at most. Each slot
// is a message buffer: only the pages a message fills are ever touched.
const batchSlots = 32

// batch reads datagrams with recvmmsg into fixed slots. Under a flood of
// alerts one system call takes a burst, where netlink.Conn.Receive took a
// call (and a copy, and several allocations) each.
type batch struct {
	rc    syscall.RawConn
	slot  int
	buf   []byte
	iovs  []unix.Iovec
	hdrs  []unix.Mmsghdr
	n     int
	errno syscall.Errno
}

func newBatch(rc syscall.RawConn, slot int) *batch {
	b := &batch{rc: rc, slot: slot, buf: make([]byte, batchSlots*slot),
		iovs: make([]unix.Iovec, batchSlots), hdrs: make([]unix.Mmsghdr, batchSlots)}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.buf[i*slot]
		b.iovs[i].SetLen(slot)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b
}

// read is the RawConn.Read callback: false (wait for the socket) while
// nothing is queued.
func (b *batch) read(fd uintptr) bool {
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Flags = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	for e == unix.EINTR {
		n, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	}
	if e == unix.EAGAIN {
		return false
	}
	b.n, b.errno = int(n), e
	return true
}

// receive blocks until datagrams arrive (or the deadline passes, or the
// socket closes) and appends their messages to msgs. The messages point
// into the slots: they are valid until the next receive. truncated counts
// datagrams cut by their slot and messages whose length does not fit
// their datagram (lost).
func (b *batch) receive(msgs []netlink.Message) (_ []netlink.Message, truncated int, err error) {
	if err := b.rc.Read(b.read); err != nil {
		return msgs, 0, err
	}
	if b.errno != 0 {
		return msgs, 0, b.errno
	}
	for i := 0; i < b.n; i++ {
		h := &b.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			truncated++
			continue
		}
		d := b.buf[i*b.slot : i*b.slot+int(h.Len)]
		for len(d) >= nlmsgHeaderLen {
			l := int(binary.NativeEndian.Uint32(d))
			if l < nlmsgHeaderLen || l > len(d) {
				truncated++ // a length that does not fit: the rest is lost
				break
			}
			var m netlink.Message
			m.Header.Length = uint32(l)
			m.Header.Type = netlink.HeaderType(binary.NativeEndian.Uint16(d[4:]))
			m.Header.Flags = netlink.HeaderFlags(binary.NativeEndian.Uint16(d[6:]))
			m.Header.Sequence = binary.NativeEndian.Uint32(d[8:])
			m.Header.PID = binary.NativeEndian.Uint32(d[12:])
			m.Data = d[nlmsgHeaderLen:l]
			msgs = append(msgs, m)
			d = d[min((l+3)&^3, len(d)):]
		}
	}
	return msgs, truncated, nil
}

const nlmsgHeaderLen = 16
