package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/pktfate/pktfate/fate"
)

// What the netlink sources (dropmon, kmod) share: the privileges they
// need, and a read loop that drains what the kernel still sends after the
// capture stops.

// checkGenlCaps returns an error when the process lacks what joining a
// generic netlink source's multicast group needs.
func checkGenlCaps(source string) error {
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading process capabilities: %w", err)
	}
	if !hasCap(caps, capNetAdmin) || !hasCap(caps, capSysAdmin) {
		return fmt.Errorf("%s needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root: %w", source, os.ErrPermission)
	}
	return nil
}

// Draining a netlink source at the stop: the kernel sends from a kworker
// (NET_DM) or a work item (the module), so messages keep arriving for a
// while. Reading goes on until none came for drainQuiet, but no longer
// than drainMax after the stop; a source still delivering then has not
// delivered everything, and says so (drainState.loss).
const (
	drainQuiet = 250 * time.Millisecond
	drainMax   = 3 * time.Second
)

// deadliner is the part of an events socket the drain needs.
type deadliner interface {
	SetReadDeadline(t time.Time) error
}

// drainState follows one source's drain.
type drainState struct {
	cut atomic.Bool // the drain ended while messages still came
}

// readLoop calls next for every message until ctx is done and the source
// has been quiet for drainQuiet (at most drainMax after ctx is done), or
// until next returns an error other than a passed deadline or closed.
// closed tells whether an error means the socket was closed.
func (d *drainState) readLoop(ctx context.Context, sock deadliner, next func() error, closed func(error) bool) error {
	var stopAt atomic.Int64 // unix ns of the stop, 0 while running
	stop := context.AfterFunc(ctx, func() {
		now := time.Now()
		stopAt.Store(now.UnixNano())
		_ = sock.SetReadDeadline(now.Add(drainQuiet))
	})
	defer stop()
	for {
		err := next()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded), closed(err):
			return nil
		default:
			return err
		}
		if at := stopAt.Load(); at != 0 {
			// Draining: another quiet period, within the bound.
			now := time.Now()
			end := time.Unix(0, at).Add(drainMax)
			if now.Add(drainQuiet).Before(end) {
				_ = sock.SetReadDeadline(now.Add(drainQuiet))
			} else {
				d.cut.Store(true)
				_ = sock.SetReadDeadline(end)
			}
		}
	}
}

// loss is the drain's entry in the source's loss counters: zero when the
// source fell quiet before the bound, unknown when it did not (how many
// messages were still to come is not known).
func (d *drainState) loss(observer string) fate.Loss {
	l := fate.Loss{Observer: observer, Name: "unread_at_stop"}
	if d.cut.Load() {
		l.Unknown = fmt.Sprintf("still delivering %s after the stop; what came later was not read", drainMax)
	}
	return l
}

// gapTracker turns socket overruns into loss intervals on the events'
// own clock: messages lost to ENOBUFS were about packets between the last
// message read before the overrun and the first one after it (the
// kernel's sending lags behind the packets, so the time of noticing the
// overrun would be the wrong interval).
type gapTracker struct {
	observer string
	overruns func() uint64
	seen     uint64 // overruns already reported
	last     uint64 // mono of the last message read (the start at first)
}

// check reports a gap before the message at mono if the socket overran
// since the previous one.
func (g *gapTracker) check(sink fate.Sink, mono uint64) {
	if n := g.overruns(); n != g.seen {
		g.seen = n
		sink.Lost(g.observer, min(g.last, mono), max(g.last, mono))
	}
	g.last = max(g.last, mono)
}

var (
	_ fate.Source = (*EBPF)(nil)
	_ fate.Source = (*Dropmon)(nil)
	_ fate.Source = (*Kmod)(nil)
)

var (
	_ fate.Noticer  = (*EBPF)(nil)
	_ fate.Noticer  = (*Dropmon)(nil)
	_ fate.Informer = (*EBPF)(nil)
)

var (
	_ fate.Noticer  = (*Kmod)(nil)
	_ fate.Informer = (*Kmod)(nil)
)
