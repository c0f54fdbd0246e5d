/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * pktfate.h - the generic netlink protocol of pktfate.ko.
 *
 * This header is the single source of the family's name, commands,
 * attributes and flags, for the module (kmod/pktfate.c) and for the Go
 * client (genl/kmod, whose tests parse this file and compare every value).
 * Values are ABI: append only.
 *
 * The family exists in the initial network namespace only. Every command
 * needs CAP_NET_ADMIN (GENL_ADMIN_PERM); joining the "events" multicast group
 * needs CAP_SYS_ADMIN (GENL_MCAST_CAP_SYS_ADMIN). Attribute policies are
 * strict: unknown attributes and wrong lengths are refused with EINVAL and
 * an extended-ack message.
 *
 * PKTFATE_CMD_ENABLE
 *	Start tracking packets through the netfilter hooks of every network
 *	namespace and reporting those freed by kfree_skb inside a hook chain.
 *	Optional: PKTFATE_ATTR_RATE (u32, events per second and CPU, 0 for no
 *	limit; default 10000), PKTFATE_ATTR_BURST (u32, 1..1048576; default
 *	1000). Enabling what is enabled only updates the rate limit.
 *
 * PKTFATE_CMD_DISABLE
 *	Stop tracking and reporting. Disabling what is disabled succeeds.
 *
 * PKTFATE_CMD_SET_FILTER
 *	Replace the filter. Every attribute is optional; a missing one matches
 *	everything: PKTFATE_ATTR_FILTER_NETNS (u32, network namespace inode),
 *	PKTFATE_ATTR_FILTER_MARK and PKTFATE_ATTR_FILTER_MARK_MASK (u32 each:
 *	skb->mark & mask == mark & mask when the packet is freed),
 *	PKTFATE_ATTR_FILTER_FAMILIES (u32, PKTFATE_FAMILY_* bits; 0 is all).
 *
 * PKTFATE_CMD_GET_STATS
 *	Reply (same command) with PKTFATE_ATTR_ENABLED (u8), the rate limit
 *	(PKTFATE_ATTR_RATE, PKTFATE_ATTR_BURST), the filter attributes, the
 *	queue length per CPU (PKTFATE_ATTR_QUEUE_LEN) and the counters
 *	PKTFATE_ATTR_STAT_* (u64 each, since the module was loaded).
 *
 * PKTFATE_CMD_DROP (multicast, group PKTFATE_GENL_MCGRP_EVENTS)
 *	One packet freed by kfree_skb between entering and leaving the chain
 *	of a netfilter hook: PKTFATE_ATTR_HOOK (u8, NF_INET_*),
 *	PKTFATE_ATTR_FAMILY (u8, NFPROTO_IPV4 or NFPROTO_IPV6),
 *	PKTFATE_ATTR_NETNS (u32), PKTFATE_ATTR_IN_IFINDEX and
 *	PKTFATE_ATTR_OUT_IFINDEX (u32, 0 for none), PKTFATE_ATTR_SKB (u64,
 *	kernel address), PKTFATE_ATTR_MARK (u32), PKTFATE_ATTR_TIMESTAMP (u64,
 *	CLOCK_MONOTONIC ns, as bpf_ktime_get_ns), PKTFATE_ATTR_REASON (u32, raw
 *	enum skb_drop_reason of the running kernel), PKTFATE_ATTR_LOCATION
 *	(u64, the caller of kfree_skb), PKTFATE_ATTR_LEN (u32, skb->len),
 *	PKTFATE_ATTR_PROTOCOL (u16, skb->protocol in host byte order),
 *	PKTFATE_ATTR_CPU (u32), PKTFATE_ATTR_PAYLOAD (binary, the first bytes
 *	from the network header, at most PKTFATE_PAYLOAD_MAX).
 */
#ifndef _UAPI_LINUX_PKTFATE_H
#define _UAPI_LINUX_PKTFATE_H

#define PKTFATE_GENL_NAME		"pktfate"
#define PKTFATE_GENL_VERSION		1
#define PKTFATE_GENL_MCGRP_EVENTS	"events"

/* Bytes of the network header copied into PKTFATE_ATTR_PAYLOAD at most. */
#define PKTFATE_PAYLOAD_MAX		128

/* Bits of PKTFATE_ATTR_FILTER_FAMILIES. */
#define PKTFATE_FAMILY_IPV4		(1U << 0)
#define PKTFATE_FAMILY_IPV6		(1U << 1)
#define PKTFATE_FAMILY_ALL		(PKTFATE_FAMILY_IPV4 | PKTFATE_FAMILY_IPV6)

enum pktfate_cmd {
	PKTFATE_CMD_UNSPEC,
	PKTFATE_CMD_ENABLE,
	PKTFATE_CMD_DISABLE,
	PKTFATE_CMD_SET_FILTER,
	PKTFATE_CMD_GET_STATS,
	PKTFATE_CMD_DROP,

	__PKTFATE_CMD_MAX,
};
#define PKTFATE_CMD_MAX (__PKTFATE_CMD_MAX - 1)

enum pktfate_attr {
	PKTFATE_ATTR_UNSPEC,
	PKTFATE_ATTR_PAD,
	/* events */
	PKTFATE_ATTR_HOOK,
	PKTFATE_ATTR_FAMILY,
	PKTFATE_ATTR_NETNS,
	PKTFATE_ATTR_IN_IFINDEX,
	PKTFATE_ATTR_OUT_IFINDEX,
	PKTFATE_ATTR_SKB,
	PKTFATE_ATTR_MARK,
	PKTFATE_ATTR_TIMESTAMP,
	PKTFATE_ATTR_REASON,
	PKTFATE_ATTR_LOCATION,
	PKTFATE_ATTR_LEN,
	PKTFATE_ATTR_PROTOCOL,
	PKTFATE_ATTR_CPU,
	PKTFATE_ATTR_PAYLOAD,
	/* configuration */
	PKTFATE_ATTR_ENABLED,
	PKTFATE_ATTR_RATE,
	PKTFATE_ATTR_BURST,
	PKTFATE_ATTR_QUEUE_LEN,
	PKTFATE_ATTR_FILTER_NETNS,
	PKTFATE_ATTR_FILTER_MARK,
	PKTFATE_ATTR_FILTER_MARK_MASK,
	PKTFATE_ATTR_FILTER_FAMILIES,
	/* counters (GET_STATS) */
	PKTFATE_ATTR_STAT_SEEN,		/* freed inside a hook, filter matched */
	PKTFATE_ATTR_STAT_REPORTED,	/* sent to the events group */
	PKTFATE_ATTR_STAT_RATE_LIMITED,	/* not queued: over the rate limit */
	PKTFATE_ATTR_STAT_QUEUE_FULL,	/* not queued: per-CPU queue full */
	PKTFATE_ATTR_STAT_ALLOC_FAILED,	/* not sent: no memory for the message */
	PKTFATE_ATTR_STAT_SEND_FAILED,	/* not sent: no listener or overrun */
	PKTFATE_ATTR_STAT_TABLE_FULL,	/* not tracked: in-flight table full */

	__PKTFATE_ATTR_MAX,
};
#define PKTFATE_ATTR_MAX (__PKTFATE_ATTR_MAX - 1)

#endif /* _UAPI_LINUX_PKTFATE_H */
