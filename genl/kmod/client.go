package kmod

import (
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/pktfate/pktfate/genl/internal/family"
	"github.com/pktfate/pktfate/genl/internal/mcast"
)

// ErrMalformed is wrapped by errors about replies or events that do not
// decode, and by those about replies that lack a value (a counter that
// cannot be read is an error, never a zero).
var ErrMalformed = errors.New("malformed pktfate message")

// LoadHint says how to get the module; the error of Dial carries it when
// the family is absent.
const LoadHint = "build it with `make kmod KDIR=/lib/modules/$(uname -r)/build` and load it with `insmod kmod/pktfate.ko`"

// EnableConfig is the rate limit of Session.Enable.
type EnableConfig struct {
	// Rate is the events per second and CPU the module queues at most; 0
	// keeps the module's default (10000). Unlimited lifts the limit.
	Rate      uint32
	Unlimited bool
	// Burst is the token bucket's depth (1..1048576); 0 keeps the default
	// (1000).
	Burst uint32
}

// Filter selects the drops a session gets; its zero value selects all.
type Filter struct {
	// Netns is a network namespace inode; 0 is every namespace.
	Netns uint32
	// Mark and MarkMask select packets with skb->mark&MarkMask ==
	// Mark&MarkMask when freed; a zero MarkMask matches every mark.
	Mark, MarkMask uint32
	// Families selects netfilter families (0: all).
	Families Families
}

// Counters are a session's counters (GET_STATS), since it was created.
type Counters struct {
	// Seen is drops inside a hook chain that matched the filter.
	Seen uint64
	// Reported is events sent to the session's socket.
	Reported uint64
	// RateLimited, QueueFull, AllocFailed and SendFailed are seen drops
	// not reported: over the rate limit, per-CPU queue full, no memory for
	// the message, the socket full (the reader also sees an overrun) or
	// gone. Losses.
	RateLimited, QueueFull, AllocFailed, SendFailed uint64
	// TableFull is passes of packets the filter selects through a chain
	// that the module could not track (its in-flight table, shared by all
	// sessions, was full): a drop there is not seen at all. A loss.
	TableFull uint64
	// StaleDropped is drops that may have been a chain's but could not be
	// attributed because the packet's entry had gone stale (a packet held
	// by a queue longer than ModuleStats.Stale, then dropped by the
	// verdict). A loss. The module no longer knows the namespace of such
	// a packet: every session whose mark filter matches counts it.
	StaleDropped uint64
	// Stolen is packets that left a chain without passing its end (a hook
	// stole or queued them: defragmentation, SYNPROXY, a forward), seen
	// later consumed, entering another chain or freed outside that chain's
	// call path. Information, not a loss.
	Stolen uint64
	// StaleExpired is entries dropped after ModuleStats.Stale without any
	// news of their packet (stolen, then freed where no tracepoint sees
	// it). Information, not a loss.
	StaleExpired uint64
}

// Lost returns the seen drops that were not reported.
func (c Counters) Lost() uint64 { return c.RateLimited + c.QueueFull + c.AllocFailed + c.SendFailed }

// Unattributed returns drops inside a chain the module could not see or
// attribute: TableFull + StaleDropped.
func (c Counters) Unattributed() uint64 { return c.TableFull + c.StaleDropped }

// Memory is one kind of the module's own allocations, since it loaded.
type Memory struct {
	AllocBytes, FreedBytes, AllocObjects, FreedObjects uint64
}

// InUse returns the bytes and objects allocated and not freed.
func (m Memory) InUse() (bytes, objects int64) {
	return int64(m.AllocBytes - m.FreedBytes), int64(m.AllocObjects - m.FreedObjects)
}

// ModuleStats is what the module shares among its sessions (GET_STATS).
type ModuleStats struct {
	QueueLen    uint32 // per CPU and session (module parameter queue_len)
	Sessions    uint32 // sessions that exist, this one included
	SessionsMax uint32
	TableSize   uint32 // in-flight table slots, shared
	TableUsed   uint32
	// Stale is the age at which an in-flight entry is stale.
	Stale time.Duration
	// Families are the families this module build hooks; NetdevHooks has
	// bit 1<<NetdevIngress and 1<<NetdevEgress for the device hooks.
	Families    Families
	NetdevHooks uint32
	// TailChains is hook lists where INT_MAX hooks registered before the
	// module run after its last entry: drops there are seen only when
	// freed with reason NETFILTER_DROP right after it (WhereTail).
	TailChains uint32
	// HookFailures is hook lists the module could not join (blind).
	HookFailures uint32

	// Module-wide counters, since the module loaded (meanings as in
	// Counters): Seen is drops found inside chains before any session's
	// filter, Tracked passes through a chain entered in the table, Rebracketed the times
	// the module moved its first entry back in front of an INT_MIN hook
	// registered after it.
	Seen, Tracked, TableFull, Stolen, StaleExpired, StaleDropped, Rebracketed uint64

	// Memory is indexed by MemKind (index 0 unused).
	Memory [memKinds]Memory
}

// Stats is a session's state and counters, and the module's (GET_STATS).
type Stats struct {
	Session uint32
	Enabled bool
	Rate    uint32 // 0: unlimited
	Burst   uint32
	Filter  Filter
	Counters
	Module ModuleStats
}

// Client talks to pktfate.ko. Create it with Dial; it must be closed. It is
// not safe for concurrent use, except that a Session's events have a
// socket of their own.
type Client struct {
	conn *family.Conn
	// openSession, when set (tests), replaces the events socket and its
	// SESSION_NEW.
	openSession func() (mcast.Conn, uint32, error)
}

// spec tells package family how to resolve pktfate.ko's family and word its
// errors.
var spec = family.Spec{
	Name: familyName, Version: familyVersion, Group: eventsGroup,
	Absent: ": the pktfate kernel module is not loaded (or this is not the initial network namespace); " +
		"pktfate never loads it: " + LoadHint,
	Check:     checkVersion,
	Commands:  cmdNames[:],
	Malformed: ErrMalformed,
}

// Dial opens a generic netlink socket and resolves the family. When the
// module is not loaded (or the caller is not in the initial network
// namespace) the error wraps os.ErrNotExist and says how to build and load
// it.
func Dial() (*Client, error) {
	conn, err := family.Dial(spec)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// initClient resolves the family on conn; tests call it with a genltest
// connection.
func initClient(conn *genetlink.Conn) (*Client, error) {
	fc, err := family.Init(conn, spec)
	if err != nil {
		return nil, err
	}
	return &Client{conn: fc}, nil
}

// checkVersion refuses a module of another protocol version: its commands
// and attributes are not the ones this client sends.
func checkVersion(f genetlink.Family) error {
	if f.Version != familyVersion {
		return fmt.Errorf("generic netlink family %s has version %d, this pktfate speaks %d: rebuild the module from this tree",
			familyName, f.Version, familyVersion)
	}
	return nil
}

// Close closes the command socket. Sessions have sockets of their own and
// stay until closed.
func (c *Client) Close() error { return c.conn.Close() }

// ModuleStats reads what the module shares among sessions (GET_STATS
// without a session; CAP_NET_ADMIN).
func (c *Client) ModuleStats() (ModuleStats, error) {
	st, err := c.stats(0)
	return st.Module, err
}

// stats sends GET_STATS, for session id unless 0, and decodes the reply.
func (c *Client) stats(id uint32) (Stats, error) {
	var encode func(*netlink.AttributeEncoder)
	if id != 0 {
		encode = func(ae *netlink.AttributeEncoder) { ae.Uint32(attrSession, id) }
	}
	msgs, err := c.conn.Execute(cmdGetStats, 0, encode)
	if err != nil {
		return Stats{}, err
	}
	if len(msgs) != 1 || msgs[0].Header.Command != cmdGetStats {
		return Stats{}, fmt.Errorf("reading %s statistics: %w: want one GET_STATS reply, got %d messages", familyName, ErrMalformed, len(msgs))
	}
	st, err := parseStats(msgs[0].Data, id != 0)
	if err != nil {
		return Stats{}, fmt.Errorf("reading %s statistics: %w", familyName, err)
	}
	if id != 0 && st.Session != id {
		return Stats{}, fmt.Errorf("reading %s statistics: %w: reply for session %d, asked for %d", familyName, ErrMalformed, st.Session, id)
	}
	return st, nil
}

// have records which attributes a reply carried.
type have map[uint16]bool

// missing returns an error naming the first of want the reply lacked.
func (h have) missing(what string, want ...uint16) error {
	for _, a := range want {
		if !h[a] {
			return fmt.Errorf("%w: %s without attribute %d (%s)", ErrMalformed, what, a, attrNames[a])
		}
	}
	return nil
}

var moduleAttrs = []uint16{attrQueueLen, attrSessions, attrSessionsMax, attrTableSize, attrTableUsed, attrStaleMs,
	attrFamiliesCovered, attrNetdevHooksCovered, attrTailChains, attrHookFailures, attrModuleStats, attrMemory}

var moduleCounters = []uint16{attrStatSeen, attrStatTracked, attrStatTableFull, attrStatStolen, attrStatStaleExpired,
	attrStatStaleDropped, attrStatRebracketed}

var sessionAttrs = []uint16{attrSession, attrEnabled, attrRate, attrBurst, attrFilterNetns, attrFilterMark, attrFilterMarkMask,
	attrFilterFamilies, attrStatSeen, attrStatReported, attrStatRateLimited, attrStatQueueFull, attrStatAllocFailed,
	attrStatSendFailed, attrStatTableFull, attrStatStolen, attrStatStaleExpired, attrStatStaleDropped}

var memAttrs = []uint16{attrMemAllocBytes, attrMemFreedBytes, attrMemAllocObjects, attrMemFreedObjects}

// parseStats decodes a GET_STATS reply (pf_fill_stats); every value the
// module sends must be there, the session's too when session is set.
func parseStats(b []byte, session bool) (Stats, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Stats{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var st Stats
	h := have{}
	m := &st.Module
	for ad.Next() {
		h[ad.Type()] = true
		switch ad.Type() {
		case attrQueueLen:
			m.QueueLen = ad.Uint32()
		case attrSessions:
			m.Sessions = ad.Uint32()
		case attrSessionsMax:
			m.SessionsMax = ad.Uint32()
		case attrTableSize:
			m.TableSize = ad.Uint32()
		case attrTableUsed:
			m.TableUsed = ad.Uint32()
		case attrStaleMs:
			m.Stale = time.Duration(ad.Uint32()) * time.Millisecond
		case attrFamiliesCovered:
			m.Families = Families(ad.Uint32())
		case attrNetdevHooksCovered:
			m.NetdevHooks = ad.Uint32()
		case attrTailChains:
			m.TailChains = ad.Uint32()
		case attrHookFailures:
			m.HookFailures = ad.Uint32()
		case attrModuleStats:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { return parseModuleCounters(nad, m) })
		case attrMemory:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { return parseMemory(nad, m) })
		case attrSession:
			st.Session = ad.Uint32()
		case attrEnabled:
			st.Enabled = ad.Uint8() != 0
		case attrRate:
			st.Rate = ad.Uint32()
		case attrBurst:
			st.Burst = ad.Uint32()
		case attrFilterNetns:
			st.Filter.Netns = ad.Uint32()
		case attrFilterMark:
			st.Filter.Mark = ad.Uint32()
		case attrFilterMarkMask:
			st.Filter.MarkMask = ad.Uint32()
		case attrFilterFamilies:
			st.Filter.Families = Families(ad.Uint32())
		default:
			if p := counterField(&st.Counters, ad.Type()); p != nil {
				*p = ad.Uint64()
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Stats{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := h.missing("GET_STATS reply", moduleAttrs...); err != nil {
		return Stats{}, err
	}
	if session {
		if err := h.missing("GET_STATS reply for a session", sessionAttrs...); err != nil {
			return Stats{}, err
		}
	}
	return st, nil
}

// counterField returns the field of c that counter attribute a fills.
func counterField(c *Counters, a uint16) *uint64 {
	switch a {
	case attrStatSeen:
		return &c.Seen
	case attrStatReported:
		return &c.Reported
	case attrStatRateLimited:
		return &c.RateLimited
	case attrStatQueueFull:
		return &c.QueueFull
	case attrStatAllocFailed:
		return &c.AllocFailed
	case attrStatSendFailed:
		return &c.SendFailed
	case attrStatTableFull:
		return &c.TableFull
	case attrStatStolen:
		return &c.Stolen
	case attrStatStaleExpired:
		return &c.StaleExpired
	case attrStatStaleDropped:
		return &c.StaleDropped
	}
	return nil
}

func parseModuleCounters(ad *netlink.AttributeDecoder, m *ModuleStats) error {
	fields := map[uint16]*uint64{
		attrStatSeen: &m.Seen, attrStatTracked: &m.Tracked, attrStatTableFull: &m.TableFull, attrStatStolen: &m.Stolen,
		attrStatStaleExpired: &m.StaleExpired, attrStatStaleDropped: &m.StaleDropped, attrStatRebracketed: &m.Rebracketed,
	}
	h := have{}
	for ad.Next() {
		if p, ok := fields[ad.Type()]; ok {
			h[ad.Type()] = true
			*p = ad.Uint64()
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	return h.missing("MODULE_STATS", moduleCounters...)
}

func parseMemory(ad *netlink.AttributeDecoder, m *ModuleStats) error {
	kinds := have{}
	for ad.Next() {
		k := ad.Type()
		if k == 0 || int(k) >= memKinds {
			continue // a kind of a newer module
		}
		kinds[k] = true
		mem := &m.Memory[k]
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			h := have{}
			for nad.Next() {
				h[nad.Type()] = true
				switch nad.Type() {
				case attrMemAllocBytes:
					mem.AllocBytes = nad.Uint64()
				case attrMemFreedBytes:
					mem.FreedBytes = nad.Uint64()
				case attrMemAllocObjects:
					mem.AllocObjects = nad.Uint64()
				case attrMemFreedObjects:
					mem.FreedObjects = nad.Uint64()
				}
			}
			if err := nad.Err(); err != nil {
				return err
			}
			return h.missing("MEMORY "+MemKind(k).String(), memAttrs...)
		})
	}
	if err := ad.Err(); err != nil {
		return err
	}
	for k := MemKind(1); k < memKinds; k++ {
		if !kinds[uint16(k)] {
			return fmt.Errorf("%w: MEMORY without kind %d (%s)", ErrMalformed, k, k)
		}
	}
	return nil
}

var cmdNames = [...]string{
	cmdEnable: "ENABLE", cmdDisable: "DISABLE", cmdSetFilter: "SET_FILTER", cmdGetStats: "GET_STATS", cmdDrop: "DROP",
	cmdSessionNew: "SESSION_NEW",
}

var attrNames = map[uint16]string{
	attrQueueLen: "QUEUE_LEN", attrSessions: "SESSIONS", attrSessionsMax: "SESSIONS_MAX", attrTableSize: "TABLE_SIZE",
	attrTableUsed: "TABLE_USED", attrStaleMs: "STALE_MS", attrFamiliesCovered: "FAMILIES_COVERED",
	attrNetdevHooksCovered: "NETDEV_HOOKS_COVERED", attrTailChains: "TAIL_CHAINS", attrHookFailures: "HOOK_FAILURES",
	attrModuleStats: "MODULE_STATS", attrMemory: "MEMORY", attrSession: "SESSION", attrEnabled: "ENABLED",
	attrRate: "RATE", attrBurst: "BURST", attrFilterNetns: "FILTER_NETNS", attrFilterMark: "FILTER_MARK",
	attrFilterMarkMask: "FILTER_MARK_MASK", attrFilterFamilies: "FILTER_FAMILIES", attrStatSeen: "STAT_SEEN",
	attrStatReported: "STAT_REPORTED", attrStatRateLimited: "STAT_RATE_LIMITED", attrStatQueueFull: "STAT_QUEUE_FULL",
	attrStatAllocFailed: "STAT_ALLOC_FAILED", attrStatSendFailed: "STAT_SEND_FAILED", attrStatTableFull: "STAT_TABLE_FULL",
	attrStatStolen: "STAT_STOLEN", attrStatStaleExpired: "STAT_STALE_EXPIRED", attrStatStaleDropped: "STAT_STALE_DROPPED",
	attrStatTracked: "STAT_TRACKED", attrStatRebracketed: "STAT_REBRACKETED", attrMemAllocBytes: "MEM_ALLOC_BYTES",
	attrMemFreedBytes: "MEM_FREED_BYTES", attrMemAllocObjects: "MEM_ALLOC_OBJECTS", attrMemFreedObjects: "MEM_FREED_OBJECTS",
}
