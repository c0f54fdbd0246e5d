// Package kmod is the client of pktfate.ko's generic netlink family
// "pktfate" (kmod/ in this repository): enabling and disabling its reports,
// setting its filter, reading its counters, and reading its drop events.
//
// The protocol is defined in one header, kmod/include/uapi/linux/pktfate.h;
// uapi.go mirrors it and TestUAPIHeader parses the header and fails on any
// difference. pktfate never loads the module: Dial fails with an error
// wrapping os.ErrNotExist that says how to build and load it.
//
// Kernel facts every user must know:
//   - The family exists in the initial network namespace only, and reports
//     drops of every namespace (each event names its namespace's inode).
//   - Its state (enabled, rate limit, filter) is global; every command needs
//     CAP_NET_ADMIN, joining the events group CAP_SYS_ADMIN.
//   - Events leave the kernel from a work item, shortly after the drop;
//     what the per-CPU queue or the rate limit could not hold is counted in
//     Stats, what the socket could not hold in Events.Overruns.
package kmod
