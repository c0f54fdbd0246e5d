package tracer

import (
	"context"
	"errors"
	"fmt"

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

// Kmod observes drops inside netfilter hooks through pktfate.ko (kmod/),
// independently of BPF. Create it with NewKmod; it must be closed. pktfate
// never loads the module: CanRun says how when it is missing.
type Kmod struct {
	cfg     KmodConfig
	c       *kmod.Client
	ev      *kmod.Session
	decoder *Decoder
	last    kmod.Counters // the session's counters when last read
	shared  uint32        // the most sessions seen in the module at once
	drain   drainState
}

// NewKmod returns a kmod source; nothing happens until Start.
func NewKmod(cfg KmodConfig) *Kmod { return &Kmod{cfg: cfg} }

// Name implements Source.
func (s *Kmod) Name() string { return "kmod" }

// Observers implements fate.Source.
func (s *Kmod) Observers() []string { return []string{fate.ObserverKmod} }

// Blind implements fate.Source: the module sees only packets freed inside
// a netfilter hook.
func (s *Kmod) Blind(observer string, r *fate.FateRecord) string {
	return fate.KnownBlind(observer, r)
}

// CanRun implements fate.Source: the module must be loaded (the error
// wraps os.ErrNotExist and says how to build and load it), and the process
// needs CAP_NET_ADMIN and CAP_SYS_ADMIN. The module reports drops only,
// filters on one network namespace and has no interface filter.
func (s *Kmod) CanRun(f fate.Filters) error {
	switch {
	case !f.Drops:
		return fmt.Errorf("the module reports drops only: %w", fate.ErrFilter)
	case f.Ifindex != 0:
		return fmt.Errorf("the module has no interface filter: %w", fate.ErrFilter)
	case len(f.Netns) > 1:
		return fmt.Errorf("the module filters on one network namespace at most: %w", fate.ErrFilter)
	}
	if err := checkGenlCaps("the kmod source"); err != nil {
		return err
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
func (s *Kmod) Run(ctx context.Context, h fate.Sink) error {
	if s.ev == nil {
		return errors.New("kmod source: Run before Start")
	}
	var d kmod.Drop
	var e fate.Event
	gaps := gapTracker{observer: fate.ObserverKmod, overruns: s.ev.Overruns, last: MonoNow()}
	return s.drain.readLoop(ctx, s.ev, func() error {
		if err := s.ev.Read(&d); err != nil {
			return err
		}
		s.fill(&e, &d)
		gaps.check(h, e.Mono)
		h.Event(&e)
		return nil
	}, func(err error) bool { return errors.Is(err, kmod.ErrClosed) })
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
// limit, queue, memory, send), packets it could not track or attribute, and
// overruns of the session's socket, since Start (the session's own
// counters). Counters that cannot be read are unknown, not zero.
func (s *Kmod) Losses() []fate.Loss {
	var err error = errors.New("the module source was not started")
	var overruns, decode uint64
	if s.ev != nil {
		var st kmod.Stats
		if st, err = s.ev.Stats(); err == nil {
			s.last = st.Counters
			s.shared = max(s.shared, st.Module.Sessions)
		}
		overruns, decode = s.ev.Overruns(), s.ev.DecodeErrors()
	}
	st := s.last
	stat := func(name string, v uint64) fate.Loss {
		l := fate.Loss{Observer: fate.ObserverKmod, Name: name, Value: v}
		if err != nil {
			l.Unknown = fmt.Sprintf("reading the module's statistics: %v", err)
		}
		return l
	}
	return []fate.Loss{
		stat("rate_limited", st.RateLimited),
		stat("queue_full", st.QueueFull),
		stat("alloc_failed", st.AllocFailed),
		stat("send_failed", st.SendFailed),
		stat("untracked", st.TableFull),
		stat("stale_dropped", st.StaleDropped),
		{Observer: fate.ObserverKmod, Name: "socket_overrun", Value: overruns},
		{Observer: fate.ObserverKmod, Name: "decode_errors", Value: decode},
		s.drain.loss(fate.ObserverKmod),
	}
}

// Notices implements fate.Noticer: other users of the module share its
// hooks and its in-flight table (each session keeps its own filter,
// reports and counters).
func (s *Kmod) Notices() []string {
	if s.shared > 1 {
		return []string{fmt.Sprintf("pktfate.ko had %d sessions at once (another pktfate): each has its own filter and reports; they share the in-flight table, whose losses (untracked) count for all", s.shared)}
	}
	return nil
}

// Information implements fate.Informer: packets that left a chain without
// passing its end (stolen, queued) and entries that expired, since Start.
func (s *Kmod) Information() []fate.Loss {
	return []fate.Loss{
		{Observer: fate.ObserverKmod, Name: "stolen", Value: s.last.Stolen},
		{Observer: fate.ObserverKmod, Name: "stale_expired", Value: s.last.StaleExpired},
	}
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
