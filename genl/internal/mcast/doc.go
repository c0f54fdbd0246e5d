// Package mcast reads a generic netlink family's multicast group on a
// socket of its own; genl/dropmon and genl/kmod build their Events on it.
//
// It does what every family's event socket needs and nothing of any one
// family: it opens the socket, sizes its receive buffer before joining the
// group, joins it (mapping EPERM to the capability to ask for), and reads.
// ENOBUFS (the kernel dropped messages because the reader was too slow) is
// counted as an overrun and reading goes on; a message that is not the
// family's or does not decode is counted as a decode error and skipped. The
// caller passes the family's decoder and its error sentinels.
package mcast
