package dropmon

import (
	"net"
	"time"

	"github.com/pktfate/pktfate/genl/internal/mcast"
)

// DefaultReadBuffer is the events socket's receive buffer unless
// ListenConfig says otherwise: 8 MiB holds several thousand packet alerts
// of a 128-byte truncation length, the burst a kworker sends at once.
const DefaultReadBuffer = 8 << 20

// messageBuffer is the user-space buffer for one datagram: the largest
// packet alert (a 64 KiB payload in one attribute plus metadata) fits.
const messageBuffer = 128 << 10

// ErrClosed is returned by Events.Read once Events is closed.
var ErrClosed = net.ErrClosed

// ListenConfig configures Listen.
type ListenConfig struct {
	// ReadBuffer is the receive buffer of the events socket in bytes
	// (SO_RCVBUF; as root SO_RCVBUFFORCE, which ignores net.core.rmem_max).
	// 0 means DefaultReadBuffer.
	ReadBuffer int
}

// Events reads alerts from NET_DM's events multicast group on a socket of
// its own. Create it with Client.Listen; it must be closed. Read is meant
// for one goroutine; Close and the counters may be called from any.
//
// Overruns of the socket's receive buffer (ENOBUFS: the kernel dropped
// alerts because the reader was too slow) are counted and reading goes on;
// so are messages that cannot be decoded.
type Events struct {
	r *mcast.Reader[*Alert]
}

// Listen opens a socket, sizes its receive buffer and joins the events
// group (CAP_SYS_ADMIN on current kernels: the error then wraps
// os.ErrPermission). Alerts flow only while monitoring runs, whoever started
// it.
func (c *Client) Listen(cfg ListenConfig) (*Events, error) {
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	r, err := mcast.Listen(mcast.Config{
		Family: familyName, FamilyID: c.conn.Family.ID, Group: eventsGroup, GroupID: c.conn.Group,
		ReadBuffer: cfg.ReadBuffer, MessageBuffer: messageBuffer,
		Unexpected: ErrUnexpected, Malformed: ErrMalformed,
		Dial: c.dialEvents,
	}, (*Alert).decode)
	if err != nil {
		return nil, err
	}
	return &Events{r: r}, nil
}

// ReadBuffer returns the receive buffer size the kernel granted (0 when
// unknown).
func (e *Events) ReadBuffer() int { return e.r.ReadBuffer() }

// Read blocks until the next alert and decodes it into a, reusing a's
// slices. It returns ErrClosed after Close, and an error wrapping
// os.ErrDeadlineExceeded when the deadline set with SetReadDeadline passes.
// To drain when stopping, set a deadline a little in the future (alerts
// leave the kernel from a kworker, some time after the drop) and read until
// it passes; a deadline already past ends Read at once, even with alerts
// waiting in the socket.
// Buffer overruns and undecodable messages are counted, not returned.
func (e *Events) Read(a *Alert) error { return e.r.Read(a) }

// SetReadDeadline sets the deadline for Read; the zero time means none.
func (e *Events) SetReadDeadline(t time.Time) error { return e.r.SetReadDeadline(t) }

// Overruns returns how many times the kernel reported ENOBUFS on the events
// socket: each time at least one alert was lost.
func (e *Events) Overruns() uint64 { return e.r.Overruns() }

// SocketDrops returns how many alerts the kernel dropped at the events
// socket because its receive buffer was full: each one (the socket's
// sk_drops), where Overruns counts the ENOBUFS reports.
func (e *Events) SocketDrops() (uint64, error) { return e.r.SocketDrops() }

// DecodeErrors returns how many messages could not be decoded (or were no
// alerts); LastDecodeError returns the last such error.
func (e *Events) DecodeErrors() uint64 { return e.r.DecodeErrors() }

// LastDecodeError returns the error of the last message Read skipped, or nil.
func (e *Events) LastDecodeError() error { return e.r.LastDecodeError() }

// Close closes the socket and unblocks a Read in progress.
func (e *Events) Close() error { return e.r.Close() }
