package scenario

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
)

// listen opens a listener inside its namespace; the returned closer stops
// it (and closes the connections it holds). Its reading and accepting
// goroutines run on threads inside the namespace, as a process there
// would: pktfate may take a packet's namespace from the task reading it.
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
				go inNetns(ns, func() {
					buf := make([]byte, 65536)
					for {
						if _, _, err := pc.ReadFrom(buf); err != nil {
							return
						}
					}
				})
			}
			return nil
		}
		ln, err := lc.Listen(context.Background(), "tcp", l.Addr.String())
		if err != nil {
			return err
		}
		t := &tcpListener{ln: ln.(*net.TCPListener), ns: ns}
		c = t
		if l.Backlog >= 0 {
			// listen(2) again on a listening socket sets its backlog.
			if err := t.setBacklog(l.Backlog); err != nil {
				ln.Close()
				return err
			}
		}
		if l.Mode != ModeNone {
			go inNetns(ns, func() { t.serve(l.Mode) })
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
	ns    *netns.NS
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
				go inNetns(t.ns, func() { io.Copy(io.Discard, c); c.Close() })
			}
		case ModeHold:
			if !t.keep(c) {
				c.Close()
			}
		case ModeClose:
			c.Close()
		case ModeReset:
			if t.keep(c) {
				go inNetns(t.ns, func() { resetAfterData(c) })
			}
		}
	}
}

// resetAfterData waits (up to 3 s) until data is queued on the connection,
// then closes it without reading (not even a peek, which would copy the
// data to user space), lingering 0 s: the kernel answers with a reset.
func resetAfterData(c *net.TCPConn) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != nil || n > 0
	})
	c.SetLinger(0)
}

// inNetns runs f on a thread inside the namespace.
func inNetns(ns *netns.NS, f func()) {
	ns.Do(func() error { f(); return nil })
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
