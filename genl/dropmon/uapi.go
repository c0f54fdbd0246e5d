package dropmon

import "strconv"

// The NET_DM generic netlink protocol, mirrored from the kernel's uAPI header
// include/uapi/linux/net_dropmon.h (the values are ABI; x/sys/unix has none).
// The behaviour behind them is in net/core/drop_monitor.c.

const (
	// familyName and familyVersion are the generic netlink family
	// (genl_family.name and .version in drop_monitor.c).
	familyName    = "NET_DM"
	familyVersion = 2
	// eventsGroup is the family's only multicast group (dropmon_mcgrps);
	// joining it needs CAP_SYS_ADMIN on current kernels
	// (GENL_MCAST_CAP_SYS_ADMIN).
	eventsGroup = "events"
)

// Commands: enum { NET_DM_CMD_* }.
const (
	cmdUnspec      = 0
	cmdAlert       = 1 // NET_DM_CMD_ALERT: summary alert (legacy binary struct)
	cmdConfig      = 2 // NET_DM_CMD_CONFIG: set alert mode, truncation, queue length
	cmdStart       = 3 // NET_DM_CMD_START
	cmdStop        = 4 // NET_DM_CMD_STOP
	cmdPacketAlert = 5 // NET_DM_CMD_PACKET_ALERT: one dropped packet
	cmdConfigGet   = 6 // NET_DM_CMD_CONFIG_GET
	cmdConfigNew   = 7 // NET_DM_CMD_CONFIG_NEW: reply to CONFIG_GET
	cmdStatsGet    = 8 // NET_DM_CMD_STATS_GET
	cmdStatsNew    = 9 // NET_DM_CMD_STATS_NEW: reply to STATS_GET
)

// Attributes: enum net_dm_attr { NET_DM_ATTR_* }.
const (
	attrUnspec           = 0  // in a summary alert: struct net_dm_alert_msg (binary)
	attrAlertMode        = 1  // u8, enum net_dm_alert_mode
	attrPC               = 2  // u64
	attrSymbol           = 3  // string
	attrInPort           = 4  // nested: portAttr*
	attrTimestamp        = 5  // u64, CLOCK_REALTIME nanoseconds
	attrProto            = 6  // u16, ethertype in host byte order
	attrPayload          = 7  // binary, from the MAC header
	attrPad              = 8  // padding for 64-bit attributes
	attrTruncLen         = 9  // u32
	attrOrigLen          = 10 // u32
	attrQueueLen         = 11 // u32
	attrStats            = 12 // nested: statsAttr*
	attrHWStats          = 13 // nested: statsAttr*
	attrOrigin           = 14 // u16, enum net_dm_origin
	attrHWTrapGroupName  = 15 // string
	attrHWTrapName       = 16 // string
	attrHWEntries        = 17 // nested: attrHWEntry*
	attrHWEntry          = 18 // nested: attrHWTrapName, attrHWTrapCount
	attrHWTrapCount      = 19 // u32
	attrSWDrops          = 20 // flag
	attrHWDrops          = 21 // flag
	attrFlowActionCookie = 22 // binary
	attrReason           = 23 // string (kernel 5.18 and later)
)

// Attributes nested in attrInPort: enum { NET_DM_ATTR_PORT_NETDEV_* }.
// Note that the first one is type 0.
const (
	portAttrIfindex = 0 // u32
	portAttrName    = 1 // string
)

// Attributes nested in attrStats and attrHWStats:
// enum { NET_DM_ATTR_STATS_* }. Also type 0.
const (
	statsAttrDropped = 0 // u64
)

// Sizes of the legacy summary structures (struct net_dm_alert_msg and
// struct net_dm_drop_point): a u32 entry count followed by entries of
// { __u8 pc[8]; __u32 count; }, 12 bytes each, in host byte order.
const (
	alertMsgHeaderLen = 4
	dropPointLen      = 12
)

// AlertMode is enum net_dm_alert_mode: what the kernel sends on the events
// group.
type AlertMode uint8

const (
	// ModeSummary sends, per CPU and at most once a second, the list of
	// drop locations with their counts (NET_DM_ALERT_MODE_SUMMARY, the
	// kernel's default, what dropwatch shows).
	ModeSummary AlertMode = 0
	// ModePacket sends one alert per dropped packet with its metadata and
	// payload (NET_DM_ALERT_MODE_PACKET).
	ModePacket AlertMode = 1
)

// String returns "summary" or "packet".
func (m AlertMode) String() string {
	switch m {
	case ModeSummary:
		return "summary"
	case ModePacket:
		return "packet"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Origin is enum net_dm_origin: whether the kernel (software) or a device
// (hardware trap, through devlink) dropped the packet.
type Origin uint16

const (
	// OriginSoftware is a drop in the kernel's stack (kfree_skb).
	OriginSoftware Origin = 0
	// OriginHardware is a packet a device trapped and reported through devlink.
	OriginHardware Origin = 1
)

// String returns "sw" or "hw".
func (o Origin) String() string {
	switch o {
	case OriginSoftware:
		return "sw"
	case OriginHardware:
		return "hw"
	}
	return "origin(" + strconv.Itoa(int(o)) + ")"
}
