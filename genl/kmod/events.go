package kmod

import (
	"errors"
	"net"
	"time"

	"github.com/pktfate/pktfate/genl/internal/mcast"
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

// Events reads DROP events from the module's events multicast group on a socket of
// its own. Create it with Client.Listen; it must be closed. Read is meant
// for one goroutine; Close and the counters may be called from any.
//
// Overruns of the socket's receive buffer (ENOBUFS: the kernel dropped
// events because the reader was too slow) are counted and reading goes on;
// so are messages that cannot be decoded.
type Events struct {
	r *mcast.Reader[*Drop]
}

// Listen opens a socket, sizes its receive buffer and joins the events
// group (CAP_SYS_ADMIN on current kernels: the error then wraps
// os.ErrPermission). Events flow only while reporting is enabled, whoever
// enabled it.
func (c *Client) Listen(cfg ListenConfig) (*Events, error) {
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	r, err := mcast.Listen(mcast.Config{
		Family: familyName, FamilyID: c.conn.Family.ID, Group: eventsGroup, GroupID: c.conn.Group,
		ReadBuffer: cfg.ReadBuffer, MessageBuffer: messageBuffer,
		Unexpected: ErrUnexpected, Malformed: ErrMalformed,
		Dial: c.dialEvents,
	}, (*Drop).decode)
	if err != nil {
		return nil, err
	}
	return &Events{r: r}, nil
}

// ReadBuffer returns the receive buffer size the kernel granted (0 when
// unknown).
func (e *Events) ReadBuffer() int { return e.r.ReadBuffer() }

// Read blocks until the next event and decodes it into d, reusing
// d.Payload. It returns ErrClosed after Close, and an error wrapping
// os.ErrDeadlineExceeded when the deadline set with SetReadDeadline passes.
// To drain when stopping, set a deadline a little in the future (events
// leave the kernel from a work item, some time after the drop) and read until
// it passes; a deadline already past ends Read at once, even with events
// waiting in the socket.
// Buffer overruns and undecodable messages are counted, not returned.
func (e *Events) Read(d *Drop) error { return e.r.Read(d) }

// SetReadDeadline sets the deadline for Read; the zero time means none.
func (e *Events) SetReadDeadline(t time.Time) error { return e.r.SetReadDeadline(t) }

// Overruns returns how many times the kernel reported ENOBUFS on the events
// socket: each time at least one event was lost.
func (e *Events) Overruns() uint64 { return e.r.Overruns() }

// DecodeErrors returns how many messages could not be decoded (or were no
// DROP events); LastDecodeError returns the last such error.
func (e *Events) DecodeErrors() uint64 { return e.r.DecodeErrors() }

// LastDecodeError returns the error of the last message Read skipped, or nil.
func (e *Events) LastDecodeError() error { return e.r.LastDecodeError() }

// Close closes the socket and unblocks a Read in progress.
func (e *Events) Close() error { return e.r.Close() }
