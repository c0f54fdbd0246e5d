package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pktfate/pktfate/fate"
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
	ev      *kmod.Events
	decoder *Decoder
	base    kmod.Stats // counters when Start enabled reporting
	enabled bool
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

// Start implements Source: it sets the filter, joins the events group and
// enables reporting.
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
	if err := c.SetFilter(s.cfg.Filter); err != nil {
		return fmt.Errorf("setting the module's filter: %w", err)
	}
	if s.ev, err = c.Listen(kmod.ListenConfig{ReadBuffer: s.cfg.ReadBuffer}); err != nil {
		return err
	}
	if s.base, err = c.Stats(); err != nil {
		return err
	}
	if err := c.Enable(s.cfg.Enable); err != nil {
		return fmt.Errorf("enabling the module's reports: %w", err)
	}
	s.enabled = true
	return nil
}

// Run implements Source.
func (s *Kmod) Run(ctx context.Context, h fate.Handler) error {
	if s.ev == nil {
		return errors.New("kmod source: Run before Start")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.ev.SetReadDeadline(time.Now().Add(kmodDrain)) })
	defer stop()
	var d kmod.Drop
	var e fate.Event
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
func (s *Kmod) fill(e *fate.Event, d *kmod.Drop) {
	*e = fate.Event{Source: "kmod", Fate: fate.FateDrop, Verdict: "drop", Data: e.Data[:0]}
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
	e.Hook = fate.NetfilterHook(d.Family, d.Hook)
	e.Family = fate.NetfilterFamily(d.Family)
	e.Data = append(e.Data, d.Payload...)
	e.MACHeader = false
	decodePacket(&e.Packet, e.EtherType, e.Data, false)
}

// Losses implements Source: drops the module saw but did not report (rate
// limit, queue, memory, send), packets it could not track, and overruns of
// the events socket, since Start.
func (s *Kmod) Losses() []fate.Counter {
	var st kmod.Stats
	if s.c != nil {
		st, _ = s.c.Stats()
	}
	b := s.base
	var overruns, decode uint64
	if s.ev != nil {
		overruns, decode = s.ev.Overruns(), s.ev.DecodeErrors()
	}
	// The module's counters count since it was loaded; one reloaded
	// meanwhile starts again from zero.
	since := func(now, start uint64) uint64 {
		if now < start {
			return now
		}
		return now - start
	}
	return []fate.Counter{
		{Name: "kmod_rate_limited", Value: since(st.RateLimited, b.RateLimited)},
		{Name: "kmod_queue_full", Value: since(st.QueueFull, b.QueueFull)},
		{Name: "kmod_alloc_failed", Value: since(st.AllocFailed, b.AllocFailed)},
		{Name: "kmod_send_failed", Value: since(st.SendFailed, b.SendFailed)},
		{Name: "kmod_untracked", Value: since(st.TableFull, b.TableFull)},
		{Name: "kmod_socket_overrun", Value: overruns},
		{Name: "kmod_decode_errors", Value: decode},
	}
}

// Close implements Source: it disables reporting if Start enabled it, and
// closes the sockets.
func (s *Kmod) Close() error {
	var errs []error
	if s.enabled {
		if err := s.c.Disable(); err != nil {
			errs = append(errs, fmt.Errorf("disabling the module's reports: %w", err))
		}
		s.enabled = false
	}
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
