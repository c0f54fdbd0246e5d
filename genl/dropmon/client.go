package dropmon

import (
	"errors"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/family"
	"github.com/pktfate/pktfate/genl/internal/mcast"
)

// ErrBusy is wrapped by the error of Start and SetConfig when drop
// monitoring is already running: NET_DM's state is global, so someone (a
// dropwatch, another pktfate, or a pktfate that was killed) started it. The
// caller can attach passively: join the events group and read what that
// session produces, without configuring, starting or stopping anything.
// START then fails with EAGAIN and CONFIG with EBUSY
// (set_all_monitor_traces, net_dm_hw_monitor_start and net_dm_cmd_config in
// net/core/drop_monitor.c); the errno stays wrapped too.
var ErrBusy = errors.New("drop monitor already running (NET_DM state is global)")

// Drops selects what START and STOP act on.
type Drops uint8

const (
	// DropsSoftware is drops in the kernel's stack (NET_DM_ATTR_SW_DROPS).
	DropsSoftware Drops = 1 << iota
	// DropsHardware is packets trapped by devices and reported through
	// devlink (NET_DM_ATTR_HW_DROPS). Kernels built without devlink refuse
	// it with EOPNOTSUPP.
	DropsHardware
)

// String returns "sw", "hw", "sw+hw" or "none".
func (d Drops) String() string {
	switch d & (DropsSoftware | DropsHardware) {
	case DropsSoftware:
		return "sw"
	case DropsHardware:
		return "hw"
	case DropsSoftware | DropsHardware:
		return "sw+hw"
	}
	return "none"
}

// Config is the drop monitor's global configuration (CONFIG, CONFIG_GET).
type Config struct {
	// Mode is what the events group carries: packet or summary alerts.
	Mode AlertMode
	// TruncLen caps the payload of packet alerts in bytes; 0 sends the
	// whole packet (up to 64 KiB).
	TruncLen uint32
	// QueueLen is the per-CPU queue of packets waiting to be sent as
	// alerts (the kernel's default is 1000); beyond it packets are counted
	// in Stats.Dropped instead. In SetConfig, 0 keeps the kernel's value.
	QueueLen uint32
}

// Stats are the drop monitor's loss counters (STATS_GET). They count since
// the module was loaded, across sessions: take differences.
type Stats struct {
	// Dropped is the number of software drops not reported because the
	// per-CPU queue was full.
	Dropped uint64
	// HWDropped is the same for hardware drops; HasHW says whether the
	// kernel reported it.
	HWDropped uint64
	HasHW     bool
}

// Client talks to the kernel's drop monitor, the generic netlink family
// NET_DM. Create it with Dial; it must be closed.
//
// Kernel quirks every user must know:
//   - NET_DM exists only in the initial network namespace (a Client dialled
//     in another one fails with os.ErrNotExist), yet it reports drops in
//     every namespace, and neither tells which one nor gives the skb
//     address or mark.
//   - Its state (running or not, alert mode, truncation, queue length) is
//     global and has no owner: never Stop a session someone else started
//     (see Session, which tracks what this process started).
//   - CONFIG, START and STOP need CAP_NET_ADMIN; CONFIG_GET and STATS_GET
//     need nothing; joining the events group needs CAP_SYS_ADMIN.
//   - In packet mode the kernel clones each dropped skb and frees the clone
//     with consume_skb from a kworker after sending the alert.
//
// A Client is not safe for concurrent use, except that Listen's Events
// have their own socket.
type Client struct {
	conn *family.Conn
	// dialEvents, when set (tests), opens the socket for Listen instead of
	// a generic netlink socket. Commands and multicast events never share
	// a socket.
	dialEvents func() (mcast.Conn, error)
}

// spec tells package family how to resolve NET_DM and word its errors.
var spec = family.Spec{
	Name: familyName, Version: familyVersion, Group: eventsGroup,
	Absent: " (kernel without CONFIG_NET_DROP_MONITOR, drop_monitor module not loaded, " +
		"or not in the initial network namespace)",
	Commands:  cmdNames[:],
	Also:      busy,
	Malformed: ErrMalformed,
}

// Dial opens a generic netlink socket and resolves the NET_DM family and its
// events group. When the family is not registered the error wraps
// os.ErrNotExist: drop_monitor is not available on this kernel (or not from
// this network namespace), which is not a crash.
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

// Close closes the command socket. It stops nothing: monitoring outlives
// the socket (see Session).
func (c *Client) Close() error { return c.conn.Close() }

// FamilyVersion returns the family's version as the kernel registered it (2
// on every kernel with packet alerts).
func (c *Client) FamilyVersion() uint8 { return c.conn.Family.Version }

// SetConfig sets the alert mode, truncation length and queue length (CONFIG;
// CAP_NET_ADMIN). While monitoring runs, the kernel refuses any change: the
// error wraps ErrBusy.
func (c *Client) SetConfig(cfg Config) error {
	_, err := c.conn.Execute(cmdConfig, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint8(attrAlertMode, uint8(cfg.Mode))
		ae.Uint32(attrTruncLen, cfg.TruncLen)
		if cfg.QueueLen != 0 {
			ae.Uint32(attrQueueLen, cfg.QueueLen)
		}
	})
	return err
}

// Config reads the current configuration (CONFIG_GET; no privileges).
func (c *Client) Config() (Config, error) {
	return family.Get(c.conn, cmdConfigGet, cmdConfigNew, "configuration", parseConfig)
}

// parseConfig decodes a CONFIG_NEW reply (net_dm_config_fill).
func parseConfig(ad *netlink.AttributeDecoder) (Config, error) {
	var cfg Config
	for ad.Next() {
		switch ad.Type() {
		case attrAlertMode:
			cfg.Mode = AlertMode(ad.Uint8())
		case attrTruncLen:
			cfg.TruncLen = ad.Uint32()
		case attrQueueLen:
			cfg.QueueLen = ad.Uint32()
		}
	}
	return cfg, ad.Err()
}

// Start starts monitoring the drops d selects (START; CAP_NET_ADMIN). When
// monitoring already runs the error wraps ErrBusy. Asking for hardware drops
// on a kernel without devlink fails with EOPNOTSUPP (unix.EOPNOTSUPP,
// wrapped), and the kernel then undoes the software part as well.
func (c *Client) Start(d Drops) error {
	_, err := c.conn.Execute(cmdStart, netlink.Acknowledge, d.encode)
	return err
}

// Stop stops monitoring the drops d selects (STOP; CAP_NET_ADMIN). Stopping
// what is not running succeeds. Only stop what you started: the state is
// global.
func (c *Client) Stop(d Drops) error {
	_, err := c.conn.Execute(cmdStop, netlink.Acknowledge, d.encode)
	return err
}

func (d Drops) encode(ae *netlink.AttributeEncoder) {
	if d&DropsSoftware != 0 {
		ae.Flag(attrSWDrops, true)
	}
	if d&DropsHardware != 0 {
		ae.Flag(attrHWDrops, true)
	}
}

// Stats reads the loss counters (STATS_GET; no privileges).
func (c *Client) Stats() (Stats, error) {
	return family.Get(c.conn, cmdStatsGet, cmdStatsNew, "statistics", parseStats)
}

// parseStats decodes a STATS_NEW reply (net_dm_stats_fill): the software
// and hardware counters, each nested with a u64 of type 0.
func parseStats(ad *netlink.AttributeDecoder) (Stats, error) {
	var st Stats
	dropped := func(dst *uint64) func(*netlink.AttributeDecoder) error {
		return func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				if nad.Type() == statsAttrDropped {
					*dst = nad.Uint64()
				}
			}
			return nad.Err()
		}
	}
	for ad.Next() {
		switch ad.Type() {
		case attrStats:
			ad.Nested(dropped(&st.Dropped))
		case attrHWStats:
			st.HasHW = true
			ad.Nested(dropped(&st.HWDropped))
		}
	}
	return st, ad.Err()
}

var cmdNames = [...]string{
	cmdConfig: "CONFIG", cmdStart: "START", cmdStop: "STOP",
	cmdConfigGet: "CONFIG_GET", cmdConfigNew: "CONFIG_NEW", cmdStatsGet: "STATS_GET", cmdStatsNew: "STATS_NEW",
}

// busy says which failures mean that monitoring already runs (wrapped as
// ErrBusy): START fails with EAGAIN and CONFIG with EBUSY.
func busy(cmd uint8, err error) error {
	if cmd == cmdStart && errors.Is(err, unix.EAGAIN) || cmd == cmdConfig && errors.Is(err, unix.EBUSY) {
		return ErrBusy
	}
	return nil
}
