/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * pktfate.h - the generic netlink protocol of pktfate.ko.
 *
 * This header is the single source of the family's name, commands,
 * attributes and flags, for the module (kmod/pktfate.c) and for the Go
 * client (genl/kmod, whose tests parse this file and compare every value).
 * Values are ABI: append only. Version 2 made the state per session; a
 * version 1 client is refused by its version check.
 *
 * The family exists in the initial network namespace only. Every command
 * needs CAP_NET_ADMIN (GENL_ADMIN_PERM); SESSION_NEW needs CAP_SYS_ADMIN as
 * well, because events carry kernel addresses. Attribute policies are
 * strict: unknown attributes and wrong lengths are refused with EINVAL and
 * an extended-ack message.
 *
 * Sessions. Each user of the module has a session of its own: its filter,
 * its rate limit, its per-CPU queues, its counters, and its events, which
 * are sent (unicast) to the netlink socket that created it and to no other.
 * A session ends when that socket is closed, however the process ends (a
 * pktfate killed with SIGKILL leaves nothing enabled). At most
 * PKTFATE_SESSIONS_MAX sessions exist at once. Shared, whoever asks: the
 * hooks (registered in every namespace and on every device while the
 * module is loaded, so that their place in each chain does not depend on
 * when a session starts), the in-flight table (PKTFATE_ATTR_TABLE_SIZE
 * packets, tracked for the union of the enabled sessions' filters) and the
 * module parameters (queue_len, table_bits, stale_ms). GET_STATS reports how
 * many sessions share them.
 *
 * PKTFATE_CMD_SESSION_NEW
 *	Create a session owned by the sending socket, disabled, with the
 *	default rate limit and a filter that selects everything. Reply (same
 *	command): PKTFATE_ATTR_SESSION (u32, the session's id: the socket's
 *	port id). Fails with EEXIST when the socket has one already and with
 *	ENOSPC when PKTFATE_SESSIONS_MAX sessions exist.
 *
 * The following commands act on the session named by PKTFATE_ATTR_SESSION
 * (u32), or, without it, on the sender's own session (ENOENT when there is
 * none).
 *
 * PKTFATE_CMD_ENABLE
 *	Start reporting to the session. Optional: PKTFATE_ATTR_RATE (u32,
 *	events per second and CPU, 0 for no limit; default 10000),
 *	PKTFATE_ATTR_BURST (u32, 1..1048576; default 1000). Enabling what is
 *	enabled only updates the rate limit.
 *
 * PKTFATE_CMD_DISABLE
 *	Stop reporting to the session; it keeps its filter and counters.
 *	Disabling what is disabled succeeds.
 *
 * PKTFATE_CMD_SET_FILTER
 *	Replace the session's filter. Every attribute is optional; a missing
 *	one matches everything: PKTFATE_ATTR_FILTER_NETNS (u32, network
 *	namespace inode), PKTFATE_ATTR_FILTER_MARK and
 *	PKTFATE_ATTR_FILTER_MARK_MASK (u32 each: skb->mark & mask == mark &
 *	mask when the packet is freed), PKTFATE_ATTR_FILTER_FAMILIES (u32,
 *	PKTFATE_FAMILY_* bits; 0 is all).
 *
 * PKTFATE_CMD_GET_STATS
 *	Reply (same command). Always, for the module: PKTFATE_ATTR_QUEUE_LEN,
 *	PKTFATE_ATTR_SESSIONS, PKTFATE_ATTR_SESSIONS_MAX,
 *	PKTFATE_ATTR_TABLE_SIZE, PKTFATE_ATTR_TABLE_USED,
 *	PKTFATE_ATTR_STALE_MS, PKTFATE_ATTR_FAMILIES_COVERED,
 *	PKTFATE_ATTR_NETDEV_HOOKS_COVERED, PKTFATE_ATTR_TAIL_CHAINS,
 *	PKTFATE_ATTR_HOOK_FAILURES (all u32), PKTFATE_ATTR_MODULE_STATS (nest
 *	of the module-wide counters, below) and PKTFATE_ATTR_MEMORY (nest,
 *	below). With PKTFATE_ATTR_SESSION, or when the sender has a session,
 *	also that session's PKTFATE_ATTR_SESSION, PKTFATE_ATTR_ENABLED (u8),
 *	rate limit (PKTFATE_ATTR_RATE, PKTFATE_ATTR_BURST), filter attributes
 *	and its counters PKTFATE_ATTR_STAT_* at the top level. Without either,
 *	no session attributes. Counters are u64, counted since the session
 *	was created (session) or the module loaded (module).
 *
 * PKTFATE_CMD_DROP (unicast to the session's socket)
 *	One packet freed by kfree_skb inside the chain of a netfilter hook:
 *	PKTFATE_ATTR_HOOK (u8, the hook number in its family's numbering:
 *	NF_INET_*, NF_ARP_*, NF_BR_*, NF_NETDEV_*), PKTFATE_ATTR_FAMILY (u8,
 *	NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_ARP, NFPROTO_BRIDGE or
 *	NFPROTO_NETDEV), PKTFATE_ATTR_WHERE (u8, PKTFATE_WHERE_*),
 *	PKTFATE_ATTR_NETNS (u32), PKTFATE_ATTR_IN_IFINDEX and
 *	PKTFATE_ATTR_OUT_IFINDEX (u32, 0 for none), PKTFATE_ATTR_SKB (u64,
 *	kernel address), PKTFATE_ATTR_MARK (u32), PKTFATE_ATTR_TIMESTAMP (u64,
 *	CLOCK_MONOTONIC ns, as bpf_ktime_get_ns), PKTFATE_ATTR_REASON (u32, raw
 *	enum skb_drop_reason of the running kernel), PKTFATE_ATTR_LOCATION
 *	(u64, the caller of kfree_skb), PKTFATE_ATTR_LEN (u32, skb->len),
 *	PKTFATE_ATTR_PROTOCOL (u16, skb->protocol in host byte order),
 *	PKTFATE_ATTR_CPU (u32), PKTFATE_ATTR_PAYLOAD (binary, the first bytes
 *	from the network header, at most PKTFATE_PAYLOAD_MAX).
 *	Inet ingress chains (NFPROTO_INET, NF_INET_INGRESS) run in the
 *	device's ingress list: their drops are reported as NFPROTO_NETDEV,
 *	NF_NETDEV_INGRESS.
 *
 * Coverage. Each hook list (per namespace: IPv4 and IPv6 x5, ARP x3,
 * bridge x5; per device: netdev ingress and egress) gets an entry at
 * priority INT_MIN, which records the packet in the in-flight table, and
 * one at INT_MAX, which forgets it. Entries of equal priority run newest
 * first, so:
 *   - an INT_MIN hook registered after the module would run before its
 *     first entry: the module notices, moves its entry back in front
 *     (PKTFATE_ATTR_STAT_REBRACKETED) and misses only the drops in between;
 *   - INT_MAX hooks registered before the module's entry (conntrack's
 *     confirm or an nftables chain at 2147483647 loaded before insmod) run
 *     after its last entry, the "tail" (PKTFATE_ATTR_TAIL_CHAINS counts
 *     such lists): a packet freed there with reason NETFILTER_DROP right
 *     after the module's last entry is reported with PKTFATE_WHERE_TAIL;
 *     a tail hook that frees the packet itself with another reason is not
 *     seen.
 *
 * Counters (PKTFATE_ATTR_STAT_*). Losses, where a drop inside a hook chain
 * is not reported: RATE_LIMITED, QUEUE_FULL, ALLOC_FAILED, SEND_FAILED
 * (seen but not sent), TABLE_FULL (a packet's pass through a chain not
 * tracked: a drop there is not seen), STALE_DROPPED (a drop that may have been the chain's but could
 * not be attributed, its entry having gone stale: a packet held by a queue
 * longer than PKTFATE_ATTR_STALE_MS, then dropped by the verdict).
 * Information, no loss: STOLEN (a packet left a chain without passing its
 * end: a hook stole it (NF_STOLEN: defragmentation queues, SYNPROXY, a
 * forward), and the module saw it consumed, entering another chain, or
 * freed outside that chain's call path), STALE_EXPIRED (an entry dropped
 * after PKTFATE_ATTR_STALE_MS without news of its packet: stolen, and
 * freed where no tracepoint sees it). SEEN counts drops seen, REPORTED the
 * events sent; TRACKED (module) the passes through a chain entered in the
 * table. A
 * session counts what its filter selects (TABLE_FULL, STOLEN and
 * STALE_EXPIRED by namespace and family only: the mark is checked when a
 * packet is freed).
 *
 * PKTFATE_ATTR_MEMORY holds one nest per PKTFATE_MEM_* kind (the nest's
 * type is the kind), each with PKTFATE_ATTR_MEM_ALLOC_BYTES,
 * PKTFATE_ATTR_MEM_FREED_BYTES, PKTFATE_ATTR_MEM_ALLOC_OBJECTS and
 * PKTFATE_ATTR_MEM_FREED_OBJECTS (u64, since the module loaded): what the
 * module allocated itself, beyond its own text and static data.
 */
#ifndef _UAPI_LINUX_PKTFATE_H
#define _UAPI_LINUX_PKTFATE_H

#define PKTFATE_GENL_NAME		"pktfate"
#define PKTFATE_GENL_VERSION		2
/* Registered for version 1's clients; since version 2 it carries nothing. */
#define PKTFATE_GENL_MCGRP_EVENTS	"events"

/* Bytes of the network header copied into PKTFATE_ATTR_PAYLOAD at most. */
#define PKTFATE_PAYLOAD_MAX		128

/* Sessions that may exist at once. */
#define PKTFATE_SESSIONS_MAX		8

/* Bits of PKTFATE_ATTR_FILTER_FAMILIES and PKTFATE_ATTR_FAMILIES_COVERED. */
#define PKTFATE_FAMILY_IPV4		(1U << 0)
#define PKTFATE_FAMILY_IPV6		(1U << 1)
/* The inet families, all there were in version 1. */
#define PKTFATE_FAMILY_ALL		(PKTFATE_FAMILY_IPV4 | PKTFATE_FAMILY_IPV6)
#define PKTFATE_FAMILY_ARP		(1U << 2)
#define PKTFATE_FAMILY_BRIDGE		(1U << 3)
#define PKTFATE_FAMILY_NETDEV		(1U << 4)
/* Every family bit. */
#define PKTFATE_FAMILY_MASK		(PKTFATE_FAMILY_ALL | PKTFATE_FAMILY_ARP | PKTFATE_FAMILY_BRIDGE | PKTFATE_FAMILY_NETDEV)

/* Values of PKTFATE_ATTR_WHERE: where in its hook's chain a packet was freed. */
enum pktfate_where {
	/* Between the module's first entry (INT_MIN) and its last (INT_MAX). */
	PKTFATE_WHERE_CHAIN,
	/* Right after its last entry, by an INT_MAX hook registered before it. */
	PKTFATE_WHERE_TAIL,
	/* By the verdict of the queue (NF_QUEUE) a hook of the chain gave it to. */
	PKTFATE_WHERE_QUEUE,
};

/* Nest types inside PKTFATE_ATTR_MEMORY. */
enum pktfate_mem {
	PKTFATE_MEM_UNSPEC,
	PKTFATE_MEM_TABLE,	/* the in-flight table */
	PKTFATE_MEM_PERCPU,	/* per-CPU data of the module and of sessions */
	PKTFATE_MEM_RING,	/* the sessions' per-CPU queues */
	PKTFATE_MEM_SESSION,	/* session structs */
	PKTFATE_MEM_FILTER,	/* filters */
	PKTFATE_MEM_HOOKS,	/* hook entries of devices */
	PKTFATE_MEM_MESSAGE,	/* DROP messages, freed when handed to netlink */

	__PKTFATE_MEM_MAX,
};
#define PKTFATE_MEM_MAX (__PKTFATE_MEM_MAX - 1)

enum pktfate_cmd {
	PKTFATE_CMD_UNSPEC,
	PKTFATE_CMD_ENABLE,
	PKTFATE_CMD_DISABLE,
	PKTFATE_CMD_SET_FILTER,
	PKTFATE_CMD_GET_STATS,
	PKTFATE_CMD_DROP,
	PKTFATE_CMD_SESSION_NEW,

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
	PKTFATE_ATTR_STAT_REPORTED,	/* sent to the session */
	PKTFATE_ATTR_STAT_RATE_LIMITED,	/* loss: not queued, over the rate limit */
	PKTFATE_ATTR_STAT_QUEUE_FULL,	/* loss: not queued, per-CPU queue full */
	PKTFATE_ATTR_STAT_ALLOC_FAILED,	/* loss: not sent, no memory for the message */
	PKTFATE_ATTR_STAT_SEND_FAILED,	/* loss: not sent, socket full or gone */
	PKTFATE_ATTR_STAT_TABLE_FULL,	/* loss: not tracked, in-flight table full */
	/* version 2 */
	PKTFATE_ATTR_SESSION,		/* u32, a session's id */
	PKTFATE_ATTR_SESSIONS,		/* u32, sessions that exist */
	PKTFATE_ATTR_SESSIONS_MAX,	/* u32, PKTFATE_SESSIONS_MAX */
	PKTFATE_ATTR_WHERE,		/* u8, PKTFATE_WHERE_* */
	PKTFATE_ATTR_TABLE_SIZE,	/* u32, in-flight table slots */
	PKTFATE_ATTR_TABLE_USED,	/* u32, slots in use now */
	PKTFATE_ATTR_STALE_MS,		/* u32, age at which an entry is stale */
	PKTFATE_ATTR_FAMILIES_COVERED,	/* u32, PKTFATE_FAMILY_* this build hooks */
	PKTFATE_ATTR_NETDEV_HOOKS_COVERED, /* u32, 1 << NF_NETDEV_* this build hooks */
	PKTFATE_ATTR_TAIL_CHAINS,	/* u32, hook lists with INT_MAX hooks after the module's */
	PKTFATE_ATTR_HOOK_FAILURES,	/* u32, hook lists the module could not join */
	PKTFATE_ATTR_MODULE_STATS,	/* nest of module-wide PKTFATE_ATTR_STAT_* */
	PKTFATE_ATTR_STAT_STOLEN,	/* info: left a chain without passing its end */
	PKTFATE_ATTR_STAT_STALE_EXPIRED, /* info: entry expired without news */
	PKTFATE_ATTR_STAT_STALE_DROPPED, /* loss: a drop not attributed, entry stale */
	PKTFATE_ATTR_STAT_TRACKED,	/* module: packets entered in the table */
	PKTFATE_ATTR_STAT_REBRACKETED,	/* module: first entries moved back in front */
	PKTFATE_ATTR_MEMORY,		/* nest of PKTFATE_MEM_* nests */
	PKTFATE_ATTR_MEM_ALLOC_BYTES,	/* u64 */
	PKTFATE_ATTR_MEM_FREED_BYTES,	/* u64 */
	PKTFATE_ATTR_MEM_ALLOC_OBJECTS,	/* u64 */
	PKTFATE_ATTR_MEM_FREED_OBJECTS,	/* u64 */

	__PKTFATE_ATTR_MAX,
};
#define PKTFATE_ATTR_MAX (__PKTFATE_ATTR_MAX - 1)

#endif /* _UAPI_LINUX_PKTFATE_H */
