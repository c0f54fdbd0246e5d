package kmod

import (
	"errors"
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/pktfate/pktfate/genl/internal/family"
	"github.com/pktfate/pktfate/genl/internal/mcast"
)

// ErrMalformed is wrapped by errors about replies or events that do not
// decode.
var ErrMalformed = errors.New("malformed pktfate message")

// LoadHint says how to get the module; the error of Dial carries it when
// the family is absent.
const LoadHint = "build it with `make kmod KDIR=/lib/modules/$(uname -r)/build` and load it with `insmod kmod/pktfate.ko`"

// EnableConfig is the rate limit of Enable.
type EnableConfig struct {
	// Rate is the events per second and CPU the module queues at most; 0
	// keeps the module's default (10000). Unlimited lifts the limit.
	Rate      uint32
	Unlimited bool
	// Burst is the token bucket's depth (1..1048576); 0 keeps the default
	// (1000).
	Burst uint32
}

// Filter selects the drops the module reports; its zero value selects all.
type Filter struct {
	// Netns is a network namespace inode; 0 is every namespace.
	Netns uint32
	// Mark and MarkMask select packets with skb->mark&MarkMask ==
	// Mark&MarkMask when freed; a zero MarkMask matches every mark.
	Mark, MarkMask uint32
	// Families selects IPv4, IPv6 or both (0).
	Families Families
}

// Stats is the module's state and counters (GET_STATS). The counters
// count since the module was loaded: take differences.
type Stats struct {
	Enabled  bool
	Rate     uint32 // 0: unlimited
	Burst    uint32
	QueueLen uint32 // per CPU
	Filter   Filter

	// Seen is drops inside a hook that matched the filter.
	Seen uint64
	// Reported is events sent to the events group.
	Reported uint64
	// RateLimited, QueueFull, AllocFailed and SendFailed are seen drops
	// not reported: over the rate limit, per-CPU queue full, no memory for
	// the message, no listener or a failed multicast.
	RateLimited, QueueFull, AllocFailed, SendFailed uint64
	// TableFull is packets the module could not track through a hook (its
	// in-flight table was full): their drops are not seen at all.
	TableFull uint64
}

// Lost returns every seen drop that was not reported.
func (s Stats) Lost() uint64 { return s.RateLimited + s.QueueFull + s.AllocFailed + s.SendFailed }

// Client talks to pktfate.ko. Create it with Dial; it must be closed. It is
// not safe for concurrent use, except that Listen's Events have their own
// socket.
type Client struct {
	conn *family.Conn
	// dialEvents, when set (tests), opens the socket for Listen instead of
	// a generic netlink socket. Commands and multicast events never share
	// a socket.
	dialEvents func() (mcast.Conn, error)
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

// Dial opens a generic netlink socket and resolves the family and its
// events group. When the module is not loaded (or the caller is not in the
// initial network namespace) the error wraps os.ErrNotExist and says how to
// build and load it.
func Dial() (*Client, error) {
	conn, err := family.Dial(spec)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// initClient resolves the family and the events group on conn; tests call
// it with a genltest connection.
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

// Close closes the command socket; the module's state stays as it is.
func (c *Client) Close() error { return c.conn.Close() }

// Enable starts reporting (ENABLE; CAP_NET_ADMIN); when reporting runs it
// only sets the rate limit.
func (c *Client) Enable(cfg EnableConfig) error {
	_, err := c.conn.Execute(cmdEnable, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
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

// Disable stops reporting (DISABLE; CAP_NET_ADMIN). Disabling what is
// disabled succeeds.
func (c *Client) Disable() error {
	_, err := c.conn.Execute(cmdDisable, netlink.Acknowledge, nil)
	return err
}

// SetFilter replaces the filter (SET_FILTER; CAP_NET_ADMIN).
func (c *Client) SetFilter(f Filter) error {
	_, err := c.conn.Execute(cmdSetFilter, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
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

// Stats reads the state and counters (GET_STATS; CAP_NET_ADMIN).
func (c *Client) Stats() (Stats, error) {
	return family.Get(c.conn, cmdGetStats, cmdGetStats, "statistics", parseStats)
}

// parseStats decodes a GET_STATS reply (pf_fill_stats).
func parseStats(ad *netlink.AttributeDecoder) (Stats, error) {
	var st Stats
	for ad.Next() {
		switch ad.Type() {
		case attrEnabled:
			st.Enabled = ad.Uint8() != 0
		case attrRate:
			st.Rate = ad.Uint32()
		case attrBurst:
			st.Burst = ad.Uint32()
		case attrQueueLen:
			st.QueueLen = ad.Uint32()
		case attrFilterNetns:
			st.Filter.Netns = ad.Uint32()
		case attrFilterMark:
			st.Filter.Mark = ad.Uint32()
		case attrFilterMarkMask:
			st.Filter.MarkMask = ad.Uint32()
		case attrFilterFamilies:
			st.Filter.Families = Families(ad.Uint32())
		case attrStatSeen:
			st.Seen = ad.Uint64()
		case attrStatReported:
			st.Reported = ad.Uint64()
		case attrStatRateLimited:
			st.RateLimited = ad.Uint64()
		case attrStatQueueFull:
			st.QueueFull = ad.Uint64()
		case attrStatAllocFailed:
			st.AllocFailed = ad.Uint64()
		case attrStatSendFailed:
			st.SendFailed = ad.Uint64()
		case attrStatTableFull:
			st.TableFull = ad.Uint64()
		}
	}
	return st, ad.Err()
}

var cmdNames = [...]string{
	cmdEnable: "ENABLE", cmdDisable: "DISABLE", cmdSetFilter: "SET_FILTER", cmdGetStats: "GET_STATS", cmdDrop: "DROP",
}
