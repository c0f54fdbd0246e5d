package kmod

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
)

// DefaultReadBuffer is the events socket's receive buffer unless
// SessionConfig says otherwise: 8 MiB holds several thousand DROP events
// (each a message of about 250 bytes in a socket buffer of about 1 KiB),
// more than the session's per-CPU queues hold at once.
const DefaultReadBuffer = 8 << 20

// messageBuffer is the user-space buffer for one datagram; a DROP event is
// about 250 bytes, the module sends each in a message of its own.
const messageBuffer = 32 << 10

// ErrClosed is returned by Session.Read once the Session is closed.
var ErrClosed = net.ErrClosed

// ErrUnexpected is wrapped by the error for a message that is no DROP event.
var ErrUnexpected = errors.New("unexpected pktfate message")

// SessionConfig configures NewSession.
type SessionConfig struct {
	// Filter is the session's filter from the start.
	Filter Filter
	// ReadBuffer is the receive buffer of the events socket in bytes
	// (SO_RCVBUF; as root SO_RCVBUFFORCE, which ignores net.core.rmem_max).
	// 0 means DefaultReadBuffer.
	ReadBuffer int
}

// Session is one user's state in the module: its filter, rate limit,
// queues and counters, and the socket its DROP events arrive on; nobody
// else's settings touch it. Create it with Client.NewSession; it must be
// closed. It starts disabled: Enable it once its reader runs.
//
// The module ends a session when its socket closes, however that happens
// (Close, the process exiting, SIGKILL): a dead pktfate leaves nothing
// enabled. Read is meant for one goroutine; Close and the event counters
// may be called from any; Enable, Disable, SetFilter and Stats use the
// Client's command socket and share its rules.
type Session struct {
	c  *Client
	id uint32
	r  *mcast.Reader[*Drop]
}

// unicastConn is the session's events socket as package mcast reads it:
// the module sends to it directly, so there is no group to join.
type unicastConn struct{ mcast.Conn }

func (unicastConn) JoinGroup(uint32) error { return nil }

// NewSession opens a socket, creates a session owned by it (SESSION_NEW;
// CAP_NET_ADMIN and CAP_SYS_ADMIN, else the error wraps os.ErrPermission),
// sizes its receive buffer and sets cfg.Filter. When the module has
// SessionsMax sessions the error wraps unix.ENOSPC.
func (c *Client) NewSession(cfg SessionConfig) (*Session, error) {
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	open := c.openSession
	if open == nil {
		open = c.dialSession
	}
	var id uint32
	r, err := mcast.Listen(mcast.Config{
		Family: familyName, FamilyID: c.conn.Family.ID, Group: eventsGroup, GroupID: c.conn.Group,
		ReadBuffer: cfg.ReadBuffer, MessageBuffer: messageBuffer,
		Unexpected: ErrUnexpected, Malformed: ErrMalformed,
		Dial: func() (mcast.Conn, error) {
			conn, sid, err := open()
			if err != nil {
				return nil, err
			}
			id = sid
			return unicastConn{conn}, nil
		},
	}, (*Drop).decode)
	if err != nil {
		return nil, err
	}
	s := &Session{c: c, id: id, r: r}
	if cfg.Filter != (Filter{}) {
		if err := s.SetFilter(cfg.Filter); err != nil {
			_ = r.Close()
			return nil, err
		}
	}
	return s, nil
}

// dialSession opens the events socket and sends SESSION_NEW on it, so that
// the session belongs to that socket.
func (c *Client) dialSession() (mcast.Conn, uint32, error) {
	conn, err := netlink.Dial(unix.NETLINK_GENERIC, &netlink.Config{MessageBufferSize: messageBuffer})
	if err != nil {
		return nil, 0, fmt.Errorf("opening generic netlink socket for a %s session: %w", familyName, err)
	}
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	id, err := c.sessionNew(conn)
	if err != nil {
		_ = conn.Close()
		return nil, 0, err
	}
	return conn, id, nil
}

// sessionNew sends SESSION_NEW on conn and returns the session's id.
func (c *Client) sessionNew(conn *netlink.Conn) (uint32, error) {
	b, err := (&genetlink.Message{Header: genetlink.Header{Command: cmdSessionNew, Version: familyVersion}}).MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("encoding %s SESSION_NEW: %w", familyName, err)
	}
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(c.conn.Family.ID), Flags: netlink.Request},
		Data:   b,
	})
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return 0, fmt.Errorf("%s SESSION_NEW needs CAP_NET_ADMIN and CAP_SYS_ADMIN: %w", familyName, err)
		}
		if errors.Is(err, unix.ENOSPC) {
			return 0, fmt.Errorf("%s SESSION_NEW: the module has %d sessions, its most (other pktfate runs): %w", familyName, SessionsMax, err)
		}
		return 0, fmt.Errorf("%s SESSION_NEW: %w", familyName, err)
	}
	return parseSessionReply(msgs)
}

func parseSessionReply(msgs []netlink.Message) (uint32, error) {
	if len(msgs) != 1 {
		return 0, fmt.Errorf("%s SESSION_NEW: %w: %d replies, want one", familyName, ErrMalformed, len(msgs))
	}
	var gm genetlink.Message
	if err := gm.UnmarshalBinary(msgs[0].Data); err != nil {
		return 0, fmt.Errorf("%s SESSION_NEW: %w: %w", familyName, ErrMalformed, err)
	}
	ad, err := netlink.NewAttributeDecoder(gm.Data)
	if err != nil {
		return 0, fmt.Errorf("%s SESSION_NEW: %w: %w", familyName, ErrMalformed, err)
	}
	var id uint32
	for ad.Next() {
		if ad.Type() == attrSession {
			id = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return 0, fmt.Errorf("%s SESSION_NEW: %w: %w", familyName, ErrMalformed, err)
	}
	if gm.Header.Command != cmdSessionNew || id == 0 {
		return 0, fmt.Errorf("%s SESSION_NEW: %w: reply of command %d without a session", familyName, ErrMalformed, gm.Header.Command)
	}
	return id, nil
}

// ID returns the session's id in the module (its socket's port id).
func (s *Session) ID() uint32 { return s.id }

// Enable starts reporting to the session (ENABLE; CAP_NET_ADMIN); when it
// reports already, it only sets the rate limit.
func (s *Session) Enable(cfg EnableConfig) error {
	_, err := s.c.conn.Execute(cmdEnable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrSession, s.id)
		switch {
		case cfg.Unlimited:
			ae.Uint32(attrRate, 0)
		case cfg.Rate != 0:
			ae.Uint32(attrRate, cfg.Rate)
		}
		if cfg.Burst != 0 {
			ae.Uint32(attrBurst, cfg.Burst)
		}
	})
	return err
}

// Disable stops reporting to the session (DISABLE; CAP_NET_ADMIN); it
// keeps its filter and counters. Disabling what is disabled succeeds.
func (s *Session) Disable() error {
	_, err := s.c.conn.Execute(cmdDisable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrSession, s.id)
	})
	return err
}

// SetFilter replaces the session's filter (SET_FILTER; CAP_NET_ADMIN).
func (s *Session) SetFilter(f Filter) error {
	_, err := s.c.conn.Execute(cmdSetFilter, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrSession, s.id)
		if f.Netns != 0 {
			ae.Uint32(attrFilterNetns, f.Netns)
		}
		if f.MarkMask != 0 {
			ae.Uint32(attrFilterMark, f.Mark)
			ae.Uint32(attrFilterMarkMask, f.MarkMask)
		}
		if f.Families != 0 {
			ae.Uint32(attrFilterFamilies, uint32(f.Families))
		}
	})
	return err
}

// Stats reads the session's state and counters and the module's
// (GET_STATS; CAP_NET_ADMIN). A value missing from the reply is an error
// wrapping ErrMalformed, never a zero. Once the session has ended (its
// socket closed) the error wraps unix.ENOENT.
func (s *Session) Stats() (Stats, error) { return s.c.stats(s.id) }

// ReadBuffer returns the receive buffer size the kernel granted (0 when
// unknown).
func (s *Session) ReadBuffer() int { return s.r.ReadBuffer() }

// Read blocks until the next event and decodes it into d, reusing
// d.Payload. It returns ErrClosed after Close, and an error wrapping
// os.ErrDeadlineExceeded when the deadline set with SetReadDeadline passes.
// To drain when stopping, Disable, then set a deadline a little in the
// future (events leave the kernel from a work item, some time after the
// drop) and read until it passes; a deadline already past ends Read at
// once, even with events waiting in the socket.
// Buffer overruns and undecodable messages are counted, not returned.
func (s *Session) Read(d *Drop) error { return s.r.Read(d) }

// SetReadDeadline sets the deadline for Read; the zero time means none.
func (s *Session) SetReadDeadline(t time.Time) error { return s.r.SetReadDeadline(t) }

// Overruns returns how many times the kernel reported ENOBUFS on the events
// socket: each time at least one event was lost (the module counts each in
// Counters.SendFailed).
func (s *Session) Overruns() uint64 { return s.r.Overruns() }

// DecodeErrors returns how many messages could not be decoded (or were no
// DROP events); LastDecodeError returns the last such error.
func (s *Session) DecodeErrors() uint64 { return s.r.DecodeErrors() }

// LastDecodeError returns the error of the last message Read skipped, or nil.
func (s *Session) LastDecodeError() error { return s.r.LastDecodeError() }

// Close closes the events socket, which ends the session in the module,
// and unblocks a Read in progress.
func (s *Session) Close() error { return s.r.Close() }
