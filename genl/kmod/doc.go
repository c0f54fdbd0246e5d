// Package kmod is the client of pktfate.ko's generic netlink family
// "pktfate" (kmod/ in this repository): sessions of their own for each
// user (filter, rate limit, counters, events), the module's shared state
// and its own memory, and the drop events.
//
// The protocol is defined in one header, kmod/include/uapi/linux/pktfate.h;
// uapi.go mirrors it and TestUAPIHeader parses the header and fails on any
// difference. pktfate never loads the module: Dial fails with an error
// wrapping os.ErrNotExist that says how to build and load it.
//
// Kernel facts every user must know:
//   - The family exists in the initial network namespace only, and reports
//     drops of every namespace (each event names its namespace's inode).
//   - Each user works in a Session: two pktfate never see or change each
//     other's filter, rate limit or switch, and a session ends with its
//     socket (a pktfate killed with SIGKILL leaves nothing enabled). Shared
//     are the hooks, the in-flight table and the queue length; ModuleStats
//     says how many sessions share them. At most SessionsMax sessions.
//   - Every command needs CAP_NET_ADMIN; a session also CAP_SYS_ADMIN (its
//     events carry kernel addresses).
//   - Events leave the kernel from a work item, shortly after the drop;
//     what the per-CPU queue or the rate limit could not hold is counted in
//     Counters, what the socket could not hold in Session.Overruns (and in
//     Counters.SendFailed).
package kmod
