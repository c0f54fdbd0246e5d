package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
)

// listen opens a listener inside its namespace; the returned closer stops
// it (and closes the connections it holds).
func listen(ns *netns.NS, l Listener) (io.Closer, error) {
	lc := net.ListenConfig{Control: sockOpts(l.Addr.Addr().Is6(), 0, l.RcvBuf)}
	var c io.Closer
	err := ns.Do(func() error {
		if l.Proto == "udp" {
			pc, err := lc.ListenPacket(context.Background(), "udp", l.Addr.String())
			if err != nil {
				return err
			}
			c = pc
			if l.Mode == ModeRead {
				go func() {
					buf := make([]byte, 65536)
					for {
						if _, _, err := pc.ReadFrom(buf); err != nil {
							return
						}
					}
				}()
			}
			return nil
		}
		ln, err := lc.Listen(context.Background(), "tcp", l.Addr.String())
		if err != nil {
			return err
		}
		t := &tcpListener{ln: ln.(*net.TCPListener)}
		c = t
		if l.Backlog >= 0 {
			// listen(2) again on a listening socket sets its backlog.
			if err := t.setBacklog(l.Backlog); err != nil {
				ln.Close()
				return err
			}
		}
		if l.Mode != ModeNone {
			go t.serve(l.Mode)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s %s in %s: %w", l.Proto, l.Addr, l.Netns, err)
	}
	return c, nil
}

// tcpListener accepts connections and treats them as its mode says.
type tcpListener struct {
	ln    *net.TCPListener
	mu    sync.Mutex
	conns []*net.TCPConn
	done  bool
}

func (t *tcpListener) setBacklog(n int) error {
	rc, err := t.ln.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), n) }); err != nil {
		return err
	}
	if lerr != nil {
		return fmt.Errorf("setting the backlog to %d: %w", n, lerr)
	}
	return nil
}

// keep remembers a connection for Close; false once closed.
func (t *tcpListener) keep(c *net.TCPConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return false
	}
	t.conns = append(t.conns, c)
	return true
}

func (t *tcpListener) serve(mode string) {
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			return
		}
		switch mode {
		case ModeRead:
			if t.keep(c) {
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		case ModeHold:
			if !t.keep(c) {
				c.Close()
			}
		case ModeClose:
			c.Close()
		case ModeReset:
			if t.keep(c) {
				go resetAfterData(c)
			}
		}
	}
}

// resetAfterData waits (up to 3 s) until data is queued on the connection,
// then closes it without reading, lingering 0 s: the kernel answers with
// a reset.
func resetAfterData(c *net.TCPConn) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1)
	rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(err, unix.EAGAIN)
	})
	c.SetLinger(0)
}

func (t *tcpListener) Close() error {
	t.mu.Lock()
	t.done = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	err := t.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	return err
}
