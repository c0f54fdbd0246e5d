package tracer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/dropmon"
)

// DropmonConfig configures the dropmon source.
type DropmonConfig struct {
	// SnapLen is how many bytes of each packet to keep from its network
	// header, as for the ebpf source (NET_DM truncates from the MAC header:
	// the source asks for 14 more). Zero means the default, 128.
	SnapLen int
	// QueueLen is NET_DM's per-CPU alert queue; 0 keeps the kernel's (1000).
	QueueLen uint32
	// Hardware also asks for devlink hardware drops where the kernel has them.
	Hardware bool
	// Decoder names reasons (for ReasonCode) and decodes packets; nil uses
	// raw names only.
	Decoder *Decoder
	// MarkerPath overrides dropmon.DefaultMarkerPath ("-" disables it).
	MarkerPath string
}

// Dropmon observes drops through the kernel's drop monitor (NET_DM, packet
// mode). Create it with NewDropmon; it must be closed. When another program
// already runs drop monitoring the source attaches passively (Passive) and
// gets whatever alert mode that program configured.
type Dropmon struct {
	cfg     DropmonConfig
	sess    *dropmon.Session
	decoder *Decoder
	clock   Clock

	summaries atomic.Uint64 // summary alerts of a passive session in summary mode
	drain     drainState
}

// NewDropmon returns a dropmon source; nothing happens until Start.
func NewDropmon(cfg DropmonConfig) *Dropmon {
	if cfg.SnapLen == 0 {
		cfg.SnapLen = defaultSnapLen
	}
	return &Dropmon{cfg: cfg}
}

// Name implements Source.
func (s *Dropmon) Name() string { return "dropmon" }

// Observers implements fate.Source.
func (s *Dropmon) Observers() []string { return []string{fate.ObserverDropmon} }

// Blind implements fate.Source: NET_DM reports drops of packets with a MAC
// header only.
func (s *Dropmon) Blind(observer string, r *fate.FateRecord) string {
	return fate.KnownBlind(observer, r)
}

// CanRun implements fate.Source: the kernel needs the NET_DM family (the
// error wraps os.ErrNotExist without it), and the process CAP_NET_ADMIN and
// CAP_SYS_ADMIN. NET_DM reports drops only, and its alerts carry no
// network namespace or mark, so those filters cannot apply.
func (s *Dropmon) CanRun(f fate.Filters) error {
	switch {
	case !f.Drops:
		return fmt.Errorf("the drop monitor reports drops only: %w", fate.ErrFilter)
	case f.InKernel():
		return fmt.Errorf("NET_DM alerts carry no network namespace or mark: the namespace, interface and mark filters cannot apply to them: %w", fate.ErrFilter)
	}
	if err := checkGenlCaps("the drop monitor"); err != nil {
		return err
	}
	c, err := dropmon.Dial()
	if err != nil {
		return err
	}
	return c.Close()
}

// Start implements Source.
func (s *Dropmon) Start() error {
	drops := dropmon.DropsSoftware
	if s.cfg.Hardware {
		drops |= dropmon.DropsHardware
	}
	sess, err := dropmon.StartSession(dropmon.SessionConfig{
		Config: dropmon.Config{
			Mode:     dropmon.ModePacket,
			TruncLen: uint32(s.cfg.SnapLen + 14),
			QueueLen: s.cfg.QueueLen,
		},
		Drops:      drops,
		MarkerPath: s.cfg.MarkerPath,
	})
	if err != nil {
		return err
	}
	s.sess = sess
	s.decoder = s.cfg.Decoder
	if s.decoder == nil {
		s.decoder = NewDecoder(nil, nil, NewClock())
	}
	s.clock = s.decoder.Clock
	return nil
}

// Notices implements fate.Noticer: monitoring another program runs, a
// recovered session, a marker that could not be written.
func (s *Dropmon) Notices() []string {
	if s.sess == nil {
		return nil
	}
	var out []string
	if s.sess.Passive() {
		out = append(out, "drop monitoring was already running (dropwatch or another pktfate): source dropmon attached passively and leaves it running")
	}
	if s.sess.Recovered() {
		out = append(out, "stopped a drop monitor session left running by a pktfate that was killed")
	}
	if err := s.sess.MarkerError(); err != nil {
		out = append(out, fmt.Sprintf("could not record this drop monitor session (%v): if pktfate is killed, the next run cannot stop what it leaves running", err))
	}
	return out
}

// Passive reports whether the source attached to drop monitoring another
// program runs (valid after Start).
func (s *Dropmon) Passive() bool { return s.sess != nil && s.sess.Passive() }

// Run implements Source.
func (s *Dropmon) Run(ctx context.Context, h fate.Sink) error {
	if s.sess == nil {
		return errors.New("dropmon source: Run before Start")
	}
	ev := s.sess.Events()
	var a dropmon.Alert
	var e fate.Event
	gaps := gapTracker{observer: fate.ObserverDropmon, overruns: ev.Overruns, last: MonoNow()}
	return s.drain.readLoop(ctx, ev, func() error {
		if err := ev.Read(&a); err != nil {
			return err
		}
		if a.Kind != dropmon.KindPacket {
			s.summaries.Add(1)
			return nil
		}
		s.fill(&e, &a.Packet)
		gaps.check(h, e.Mono)
		h.Event(&e)
		return nil
	}, func(err error) bool { return errors.Is(err, dropmon.ErrClosed) })
}

// fill converts a packet alert into an Event. NET_DM gives no skb address,
// mark, netns or CPU; its time is wall-clock, converted to the monotonic
// clock of the ebpf events with the same offset.
func (s *Dropmon) fill(e *fate.Event, p *dropmon.PacketAlert) {
	*e = fate.Event{Source: "dropmon", Fate: fate.FateDrop, Data: e.Data[:0]}
	e.Time = p.Time()
	e.Mono = s.clock.Mono(e.Time)
	e.LocationAddr = p.PC
	// %pS prints "func+0xoff/0xsize": keep "func+0xoff" like Symbols.Format.
	e.Location, _, _ = strings.Cut(p.Symbol, "/")
	if p.Origin == dropmon.OriginHardware {
		e.Location = "hw:" + p.HWTrapGroup + "/" + p.HWTrapName
	}
	e.Reason = p.Reason
	if v, ok := s.decoder.Reasons.Value(p.Reason); ok {
		e.ReasonCode = v
	}
	e.Ifindex = p.Ifindex
	e.Ifname = p.Ifname
	e.Len = p.OrigLen
	e.EtherType = p.Proto
	n := min(len(p.Payload), s.cfg.SnapLen+14)
	e.Data = append(e.Data, p.Payload[:n]...)
	e.MACHeader = true
	decodePacket(&e.Packet, e.EtherType, e.Data, true)
}

// Losses implements Source: alerts the kernel's queue could not hold, and
// ENOBUFS overruns of the events socket.
func (s *Dropmon) Losses() []fate.Loss {
	var l dropmon.Loss
	var err error = errors.New("the drop monitor session was not started")
	if s.sess != nil {
		l, err = s.sess.Loss()
	}
	queue := fate.Loss{Observer: fate.ObserverDropmon, Name: "queue_full", Value: l.Queue + l.HWQueue}
	if err != nil {
		queue.Unknown = fmt.Sprintf("reading NET_DM's statistics: %v", err)
	}
	// Each alert the socket could not hold, from its sk_drops: an ENOBUFS
	// report stands for a whole burst (20,000 alerts were lost in 6.1
	// under a flood, and one overrun reported).
	overrun := fate.Loss{Observer: fate.ObserverDropmon, Name: "socket_overrun", Value: max(l.SocketDrops, l.Overruns)}
	if l.SocketDropsErr != nil && l.Overruns > 0 {
		overrun.Unknown = fmt.Sprintf("%d ENOBUFS reports, each at least one alert lost, and the socket's own count could not be read: %v", l.Overruns, l.SocketDropsErr)
	}
	return []fate.Loss{
		queue,
		overrun,
		{Observer: fate.ObserverDropmon, Name: "decode_errors", Value: l.Decode},
		{Observer: fate.ObserverDropmon, Name: "summary_alerts_skipped", Value: s.summaries.Load()},
		s.drain.loss(fate.ObserverDropmon),
	}
}

// Close implements Source: it stops monitoring only if this source started
// it.
func (s *Dropmon) Close() error {
	if s.sess == nil {
		return nil
	}
	return s.sess.Close()
}
