// Package mcasttest provides a multicast socket double for tests of
// genl/internal/mcast and of the clients built on it: an nltest connection
// that serves queued reads, plus group membership.
package mcasttest

import (
	"net"
	"slices"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
)

// Read is what one Receive returns: messages, or an error (unix.ENOBUFS
// for an overrun).
type Read struct {
	Msgs []netlink.Message
	Err  error
}

// Conn serves the Reads it was made with, one per Receive; once they are
// used up or Conn is closed, Receive reports net.ErrClosed as a closed
// socket does. It has no file descriptor, so
// receive buffer sizing leaves it alone.
type Conn struct {
	*netlink.Conn

	mu      sync.Mutex
	queue   []Read
	joined  []uint32
	joinErr error
	closed  bool
}

// NewConn returns a Conn serving reads in order.
func NewConn(reads ...Read) *Conn {
	c := &Conn{queue: reads}
	c.Conn = nltest.Dial(func([]netlink.Message) ([]netlink.Message, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || len(c.queue) == 0 {
			return nil, net.ErrClosed
		}
		r := c.queue[0]
		c.queue = c.queue[1:]
		return r.Msgs, r.Err
	})
	return c
}

// FailJoin makes JoinGroup fail with err.
func (c *Conn) FailJoin(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joinErr = err
}

// JoinGroup records the group, or fails as FailJoin said.
func (c *Conn) JoinGroup(group uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joinErr != nil {
		return c.joinErr
	}
	c.joined = append(c.joined, group)
	return nil
}

// Joined returns the groups joined so far.
func (c *Conn) Joined() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.joined)
}

// Close closes the connection and records it.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// Closed says whether Close was called.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
