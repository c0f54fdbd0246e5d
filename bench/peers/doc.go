// Package peers is pktfate's peer benchmark (make bench-peers, see
// README.md): the same UDP flood under pktfate and under the tools users
// would pick instead (perf, bpftrace, dropwatch), in one boot of each
// Debian kernel under QEMU with instruction counting, so that guest time,
// and every rate and ready time measured in it, does not depend on the
// host. This package holds what the guest driver (cmd/peersguest) and the
// host command (cmd/benchpeers) share: the tools file, the parsers of each
// tool's output, and the table.
package peers
