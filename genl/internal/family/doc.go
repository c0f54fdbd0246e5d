// Package family is the command side that genl/dropmon and genl/kmod
// share: a generic netlink socket with one family and its multicast group
// resolved once, requests whose errors name the family, the command and,
// for EPERM, the capability to ask for, and queries answered by one reply
// (Get).
//
// What differs between families stays with them and comes in through
// Spec: why a family may be missing and what to do about it, whether the
// registered family is one the client speaks, and errno values that mean
// something of the family's own (NET_DM's "already running").
package family
