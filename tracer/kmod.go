package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pktfate/pktfate/genl/kmod"
)

// KmodConfig configures the kmod source.
type KmodConfig struct {
	// Filter is passed to the module (network namespace, mark, families).
	Filter kmod.Filter
	// Enable is the module's rate limit.
	Enable kmod.EnableConfig
	// ReadBuffer is the events socket's receive buffer; 0 is
	// kmod.DefaultReadBuffer.
	ReadBuffer int
	// Decoder names reasons (for ReasonCode) and decodes packets; nil uses
	// raw values only.
	Decoder *Decoder
}

// kmodDrain is how long Run keeps reading after ctx is done: the module
// sends events from a work item, some time after the drop.
const kmodDrain = 200 * time.Millisecond

// Kmod observes drops inside netfilter hooks through pktfate.ko (kmod/),
// independently of BPF. Create it with NewKmod; it must be closed. pktfate
// never loads the module: CanRun says how when it is missing.
type Kmod struct {
	cfg     KmodConfig
	c       *kmod.Client
	ev      *kmod.Session
	decoder *Decoder
	last    kmod.Counters // the session's counters when last read
}

// NewKmod returns a kmod source; nothing happens until Start.
func NewKmod(cfg KmodConfig) *Kmod { return &Kmod{cfg: cfg} }

// Name implements Source.
func (s *Kmod) Name() string { return "kmod" }

// CanRun implements Source: the module must be loaded (the error wraps
// os.ErrNotExist and says how to build and load it), and the process needs
// CAP_NET_ADMIN and CAP_SYS_ADMIN.
func (s *Kmod) CanRun() error {
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading process capabilities: %w", err)
	}
	if !hasCap(caps, capNetAdmin) || !hasCap(caps, capSysAdmin) {
		return fmt.Errorf("the kmod source needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root: %w", os.ErrPermission)
	}
	c, err := kmod.Dial()
	if err != nil {
		return err
	}
	return c.Close()
}

// Start implements Source: it opens a session of its own in the module
// (another pktfate's filter and switch stay as they are) and enables it.
func (s *Kmod) Start() error {
	s.decoder = s.cfg.Decoder
	if s.decoder == nil {
		s.decoder = NewDecoder(nil, nil, NewClock())
	}
	c, err := kmod.Dial()
	if err != nil {
		return err
	}
	s.c = c
	if s.ev, err = c.NewSession(kmod.SessionConfig{Filter: s.cfg.Filter, ReadBuffer: s.cfg.ReadBuffer}); err != nil {
		return fmt.Errorf("opening a session in the module: %w", err)
	}
	if err := s.ev.Enable(s.cfg.Enable); err != nil {
		return fmt.Errorf("enabling the module's reports: %w", err)
	}
	return nil
}

// Run implements Source.
func (s *Kmod) Run(ctx context.Context, h Handler) error {
	if s.ev == nil {
		return errors.New("kmod source: Run before Start")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.ev.SetReadDeadline(time.Now().Add(kmodDrain)) })
	defer stop()
	var d kmod.Drop
	var e Event
	for {
		err := s.ev.Read(&d)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, kmod.ErrClosed):
			return nil
		default:
			return err
		}
		s.fill(&e, &d)
		h(&e)
	}
}

// fill converts a module event into an Event: a drop inside a netfilter
// hook, with the packet from its network header.
func (s *Kmod) fill(e *Event, d *kmod.Drop) {
	*e = Event{Source: "kmod", Fate: FateDrop, Verdict: "drop", Data: e.Data[:0]}
	e.Mono = d.Mono
	e.Time = s.decoder.Clock.Wall(d.Mono)
	e.CPU = d.CPU
	e.Skb = d.Skb
	e.ReasonCode = d.Reason
	e.Reason = s.decoder.Reasons.Name(d.Reason)
	e.LocationAddr = d.Location
	e.Location = s.decoder.Symbols.Format(d.Location)
	e.Netns = d.Netns
	e.Ifindex = d.InIfindex
	if e.Ifindex == 0 {
		e.Ifindex = d.OutIfindex
	}
	e.Mark = d.Mark
	e.Len = d.Len
	e.EtherType = d.Protocol
	e.Hook = kmod.HookName(d.Family, d.Hook)
	e.Family = kmod.FamilyName(d.Family)
	e.Data = append(e.Data, d.Payload...)
	e.MACHeader = false
	s.decoder.pkt.decode(&e.Packet, e.EtherType, e.Data, false)
}

// Losses implements Source: drops the module saw but did not report (rate
// limit, queue, memory, send), packets it could not track or attribute, and
// overruns of the events socket, since Start (the session's own counters).
// When the counters cannot be read, the last ones read are given with
// kmod_stats_unreadable set: unknown is not zero.
func (s *Kmod) Losses() []Counter {
	var unreadable uint64
	var overruns, decode uint64
	if s.ev != nil {
		if st, err := s.ev.Stats(); err == nil {
			s.last = st.Counters
		} else {
			unreadable = 1
		}
		overruns, decode = s.ev.Overruns(), s.ev.DecodeErrors()
	}
	st := s.last
	c := []Counter{
		{Name: "kmod_rate_limited", Value: st.RateLimited},
		{Name: "kmod_queue_full", Value: st.QueueFull},
		{Name: "kmod_alloc_failed", Value: st.AllocFailed},
		{Name: "kmod_send_failed", Value: st.SendFailed},
		{Name: "kmod_untracked", Value: st.TableFull},
		{Name: "kmod_stale_dropped", Value: st.StaleDropped},
		{Name: "kmod_socket_overrun", Value: overruns},
		{Name: "kmod_decode_errors", Value: decode},
	}
	if unreadable != 0 {
		c = append(c, Counter{Name: "kmod_stats_unreadable", Value: unreadable})
	}
	return c
}

// Close implements Source: closing the session's socket ends the session
// in the module; then the command socket.
func (s *Kmod) Close() error {
	var errs []error
	if s.ev != nil {
		errs = append(errs, s.ev.Close())
		s.ev = nil
	}
	if s.c != nil {
		errs = append(errs, s.c.Close())
		s.c = nil
	}
	return errors.Join(errs...)
}
