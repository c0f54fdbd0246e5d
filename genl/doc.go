// Package genl is the home of pktfate's generic netlink clients. Each family
// lives in its own subpackage:
//
//   - genl/dropmon: the kernel's drop monitor (family NET_DM, what dropwatch
//     uses), pktfate's second observer of packet drops next to eBPF.
//   - genl/kmod: pktfate.ko's family "pktfate", drops inside netfilter
//     hooks.
//
// What the clients share lives under genl/internal: family (the command
// socket: resolving the family and its group, requests, errno mapping) and
// mcast (the events socket: receive buffer, group membership, ENOBUFS and
// decode errors counted). Each client passes in what is its own: its
// messages' decoders, its error sentinels and why its family may be missing.
//
// The clients follow one shape (see STYLE.md): a type wrapping a
// *genetlink.Conn with the family and its multicast groups resolved once,
// one parse function per message type on a netlink.AttributeDecoder, and
// errno values mapped so that callers can branch with errors.Is
// (os.ErrNotExist: the family is not registered, the source is not
// available; os.ErrPermission: a capability is missing).
package genl
