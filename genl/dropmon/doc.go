// Package dropmon is a client of the kernel's drop monitor, the generic
// netlink family NET_DM (net/core/drop_monitor.c, uAPI in
// include/uapi/linux/net_dropmon.h; what dropwatch uses). It is pktfate's
// second observer of packet drops, independent of eBPF: the kernel's own
// kfree_skb probe reports each dropped packet with its location, reason,
// input interface, time and payload.
//
// Three layers:
//
//   - Client: the commands (CONFIG, START, STOP, CONFIG_GET, STATS_GET) on
//     one socket, with errno values mapped: os.ErrNotExist when the family
//     is not registered (no drop monitor: the source is unavailable),
//     os.ErrPermission naming the missing capability, ErrBusy when
//     monitoring already runs.
//   - Events (Client.Listen): the events multicast group on a socket of its
//     own, with a sized receive buffer; ENOBUFS overruns are counted and
//     reading goes on. Alerts decode into Alert: PacketAlert in packet
//     mode, SummaryAlert (the legacy binary location/count list) in summary
//     mode.
//   - Session (StartSession): the rules for sharing a global, ownerless
//     facility: start monitoring or attach passively, stop only what this
//     process started, and recover after a pktfate was killed with SIGKILL.
//
// The drop monitor exists only in the initial network namespace and keeps
// global state shared with every other user on the machine; read the
// Client and Session documentation before changing anything.
//
// The decoders (ParseMessage and the parse functions behind it) accept
// untrusted bytes: anything truncated or malformed returns an error
// wrapping ErrMalformed, never panics, and allocates at most in proportion
// to its input. Byte fixtures recorded from real kernels live in
// testdata/dropmon.
package dropmon
