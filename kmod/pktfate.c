// SPDX-License-Identifier: GPL-2.0
/*
 * pktfate.ko - report packets dropped inside netfilter hook chains.
 *
 * Every hook list (per network namespace: IPv4 and IPv6, five hooks each,
 * ARP's three, the bridge's five; per device: netdev ingress and egress)
 * gets two entries: one at priority INT_MIN, which records the skb in a
 * bounded in-flight table, and one at INT_MAX, which forgets it. A probe on
 * the kfree_skb tracepoint looks the freed skb up: found, and the traversal
 * that recorded it still under way on this stack, it was freed inside that
 * hook's chain, that is dropped there. Each session (one per user, created
 * from its netlink socket and ended when that socket closes) has its own
 * filter, rate limit, per-CPU queues and counters; a work item per session
 * sends its drops to its socket (include/uapi/linux/pktfate.h).
 *
 * Packets a hook steals (NF_STOLEN, NF_QUEUE, defragmentation) never reach
 * the last entry. Their entries end when the module next hears of the
 * packet (consume_skb, another chain, a free outside the traversal), or go
 * stale after stale_ms; each way is counted, and none fills the table for
 * long. What stays blind is listed in the header (Coverage).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/atomic.h>
#include <linux/hash.h>
#include <linux/jiffies.h>
#include <linux/kallsyms.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/netdevice.h>
#include <linux/netfilter.h>
#include <linux/netfilter_arp.h>
#include <linux/netfilter_bridge.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/sched/task_stack.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/stringify.h>
#include <linux/tracepoint.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <net/sock.h>
#include <trace/events/skb.h>

#include <uapi/linux/pktfate.h>

#ifndef GENL_MCAST_CAP_SYS_ADMIN
/* Kernel 6.7, and stable kernels with the backport (6.1.y has it). */
#error "pktfate needs GENL_MCAST_CAP_SYS_ADMIN"
#endif

/* In-flight table: packets between the first and the last hook entry. */
#define PF_TABLE_PROBE	4
/* Locks for entries old enough that the sweeper may take them. */
#define PF_LOCK_BITS	6
/* Traversals remembered per CPU and kind of context. */
#define PF_FRAMES	8
/* Locations of kfree_skb remembered per CPU and context (nf_reinject?). */
#define PF_SYMS_BITS	4

#define PF_DEFAULT_RATE		10000
#define PF_DEFAULT_BURST	1000
#define PF_MAX_BURST		(1U << 20)

/* Slot word while the slot is being written. */
#define PF_BUSY		1UL
/* Owner of a traversal that runs on the CPU's irq stack (softirq). */
#define PF_IRQ_STACK	1UL

/*
 * The per-CPU system workqueue: 6.17 named it system_percpu_wq, and 7.x
 * warns once when work is queued on its old name.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 17, 0)
#define PF_WQ system_percpu_wq
#else
#define PF_WQ system_wq
#endif

static unsigned int queue_len = 256;
module_param(queue_len, uint, 0444);
MODULE_PARM_DESC(queue_len, "drops queued per CPU and session (1-4096, default 256)");

static unsigned int table_bits = 11;
module_param(table_bits, uint, 0444);
MODULE_PARM_DESC(table_bits, "in-flight table of 2^table_bits packets (6-16, default 11)");

static unsigned int stale_ms = 1000;
module_param(stale_ms, uint, 0444);
MODULE_PARM_DESC(stale_ms, "age at which an in-flight entry is stale (100-60000, default 1000)");

/* From the parameters: table slots, and the stale age in jiffies. */
static unsigned int pf_table_size __read_mostly;
static unsigned long pf_stale __read_mostly;

/* Counters: module-wide and per session (not every one is both). */
enum pf_stat {
	PF_SEEN,
	PF_REPORTED,
	PF_RATE_LIMITED,
	PF_QUEUE_FULL,
	PF_ALLOC_FAILED,
	PF_SEND_FAILED,
	PF_TABLE_FULL,
	PF_STOLEN,
	PF_STALE_EXPIRED,
	PF_STALE_DROPPED,
	PF_TRACKED,
	PF_NSTATS,
};

struct pf_counters {
	u64 v[PF_NSTATS];
};

static const struct {
	u16 attr;
	u8 stat;
	u8 module;	/* module-wide */
	u8 session;	/* per session */
} pf_stat_attrs[] = {
	{ PKTFATE_ATTR_STAT_SEEN, PF_SEEN, 1, 1 },
	{ PKTFATE_ATTR_STAT_REPORTED, PF_REPORTED, 0, 1 },
	{ PKTFATE_ATTR_STAT_RATE_LIMITED, PF_RATE_LIMITED, 0, 1 },
	{ PKTFATE_ATTR_STAT_QUEUE_FULL, PF_QUEUE_FULL, 0, 1 },
	{ PKTFATE_ATTR_STAT_ALLOC_FAILED, PF_ALLOC_FAILED, 0, 1 },
	{ PKTFATE_ATTR_STAT_SEND_FAILED, PF_SEND_FAILED, 0, 1 },
	{ PKTFATE_ATTR_STAT_TABLE_FULL, PF_TABLE_FULL, 1, 1 },
	{ PKTFATE_ATTR_STAT_STOLEN, PF_STOLEN, 1, 1 },
	{ PKTFATE_ATTR_STAT_STALE_EXPIRED, PF_STALE_EXPIRED, 1, 1 },
	{ PKTFATE_ATTR_STAT_STALE_DROPPED, PF_STALE_DROPPED, 1, 1 },
	{ PKTFATE_ATTR_STAT_TRACKED, PF_TRACKED, 1, 0 },
};

/* What the module allocates, by kind (PKTFATE_MEM_*). */
struct pf_mem {
	atomic64_t alloc_bytes;
	atomic64_t freed_bytes;
	atomic64_t alloc_objects;
	atomic64_t freed_objects;
};

static struct pf_mem pf_mem[__PKTFATE_MEM_MAX];

static void pf_mem_alloc(int kind, size_t bytes)
{
	atomic64_add(bytes, &pf_mem[kind].alloc_bytes);
	atomic64_inc(&pf_mem[kind].alloc_objects);
}

static void pf_mem_free(int kind, size_t bytes)
{
	atomic64_add(bytes, &pf_mem[kind].freed_bytes);
	atomic64_inc(&pf_mem[kind].freed_objects);
}

/* Where a packet is: a hook's chain in a namespace, between devices. */
struct pf_where {
	u32 netns;
	u32 in_ifindex;
	u32 out_ifindex;
	u8 hook;
	u8 pf;
};

/*
 * Where a traversal of a hook chain runs: enough to tell later whether it
 * still runs. A chain runs synchronously on one stack (a task's, or a
 * CPU's irq stack for softirqs), with its struct nf_hook_state on that
 * stack; gen numbers it among the traversals this CPU remembers.
 */
struct pf_ctx {
	unsigned long owner;	/* the task, or PF_IRQ_STACK */
	unsigned long state;	/* address of its struct nf_hook_state */
	u32 gen;
	u16 cpu;
	u8 kind;		/* PF_KIND_* */
};

enum { PF_KIND_SOFTIRQ, PF_KIND_TASK, PF_KINDS };

struct pf_slot {
	unsigned long skb;	/* 0: free, PF_BUSY: being written */
	unsigned long since;	/* jiffies: cheaper than a clock per packet */
	struct pf_ctx ctx;
	struct pf_where at;
	/* The bridge chain br_netfilter ran this inet or arp chain from. */
	struct pf_ctx outer_ctx;
	struct pf_where outer;
	bool has_outer;
};

/* Traversals under way on this CPU, newest first out. */
struct pf_frame {
	unsigned long owner;
	unsigned long state;
	u32 gen;
};

struct pf_frames {
	struct pf_frame f[PF_FRAMES];
	u32 gen;
};

/*
 * The last packet that passed the module's last entry of a chain with
 * INT_MAX hooks after it: a NETFILTER_DROP of it in the same traversal was
 * dropped by one of those.
 */
struct pf_tail {
	unsigned long skb;
	unsigned long owner;
	unsigned long state;
	struct pf_where at;
};

/* Is a kfree_skb location inside nf_reinject (a queue's verdict)? */
struct pf_syms {
	unsigned long loc[1U << PF_SYMS_BITS];
	u8 reinject[1U << PF_SYMS_BITS];
	char buf[KSYM_SYMBOL_LEN];
};

struct pf_pcpu {
	struct pf_frames frames[PF_KINDS];
	struct pf_tail tail[PF_KINDS];
	struct pf_syms syms[PF_KINDS];
	struct pf_counters stats;
};

struct pf_record {
	u64 ts;
	u64 skb;
	u64 location;
	u32 netns;
	u32 in_ifindex;
	u32 out_ifindex;
	u32 mark;
	u32 reason;
	u32 len;
	u32 cpu;
	u16 protocol;
	u16 data_len;
	u8 hook;
	u8 pf;
	u8 where;
	u8 data[PKTFATE_PAYLOAD_MAX];
};

/* A session's per-CPU queue and token bucket, under lock (irqs off). */
struct pf_scpu {
	spinlock_t lock;
	unsigned int head;
	unsigned int count;
	u64 tokens;	/* in ns of refill time */
	u64 last;
	struct pf_record *ring;
	struct pf_counters stats;
};

struct pf_filter {
	u32 netns;
	u32 mark;
	u32 mark_mask;
	u32 families;
	struct rcu_head rcu;
};

struct pf_session {
	u32 portid;
	unsigned int index;
	/* Held: its SOCK_DEAD tells a released socket from a new one. */
	struct sock *sk;
	bool enabled;
	u32 rate;
	u32 burst;
	struct pf_filter __rcu *filter;
	struct pf_scpu __percpu *cpus;
	struct work_struct work;
	struct pf_record rec;	/* the work's copy */
};

/* One hook list the module is in: its two entries (see pf_rebracket). */
struct pf_list {
	struct nf_hook_ops enter[2];
	struct nf_hook_ops exit;
	struct nf_hook_entries __rcu **head;
	struct net *net;
	unsigned long flags;	/* PF_LIST_* bits */
	unsigned long moved;	/* jiffies of the last rebracket */
	u8 active;		/* enter[active] is registered */
	bool registered;
};

enum { PF_LIST_REBRACKET };

/* Hook lists of a namespace. */
static const struct {
	u8 pf;
	u8 hook;
} pf_net_hooks[] = {
	{ NFPROTO_IPV4, NF_INET_PRE_ROUTING },
	{ NFPROTO_IPV4, NF_INET_LOCAL_IN },
	{ NFPROTO_IPV4, NF_INET_FORWARD },
	{ NFPROTO_IPV4, NF_INET_LOCAL_OUT },
	{ NFPROTO_IPV4, NF_INET_POST_ROUTING },
	{ NFPROTO_IPV6, NF_INET_PRE_ROUTING },
	{ NFPROTO_IPV6, NF_INET_LOCAL_IN },
	{ NFPROTO_IPV6, NF_INET_FORWARD },
	{ NFPROTO_IPV6, NF_INET_LOCAL_OUT },
	{ NFPROTO_IPV6, NF_INET_POST_ROUTING },
#ifdef CONFIG_NETFILTER_FAMILY_ARP
	{ NFPROTO_ARP, NF_ARP_IN },
	{ NFPROTO_ARP, NF_ARP_OUT },
	{ NFPROTO_ARP, NF_ARP_FORWARD },
#endif
#ifdef CONFIG_NETFILTER_FAMILY_BRIDGE
	{ NFPROTO_BRIDGE, NF_BR_PRE_ROUTING },
	{ NFPROTO_BRIDGE, NF_BR_LOCAL_IN },
	{ NFPROTO_BRIDGE, NF_BR_FORWARD },
	{ NFPROTO_BRIDGE, NF_BR_LOCAL_OUT },
	{ NFPROTO_BRIDGE, NF_BR_POST_ROUTING },
#endif
};

#define PF_NET_LISTS ARRAY_SIZE(pf_net_hooks)

struct pf_net {
	struct list_head node;
	struct pf_list lists[PF_NET_LISTS];
};

/* Hook lists of a device: netdev ingress (inet ingress too) and egress. */
enum { PF_DEV_INGRESS, PF_DEV_EGRESS, PF_DEV_LISTS };

struct pf_dev {
	struct list_head node;
	struct net_device *dev;
	struct pf_list lists[PF_DEV_LISTS];
	struct rcu_head rcu;
};

static struct pf_slot *pf_table;
static spinlock_t pf_locks[1U << PF_LOCK_BITS];
static struct pf_pcpu __percpu *pf_pcpu;
static atomic64_t pf_rebracketed = ATOMIC64_INIT(0);
static atomic_t pf_hook_failures = ATOMIC_INIT(0);

static struct pf_session __rcu *pf_sessions[PKTFATE_SESSIONS_MAX];
/* Read without the lock by the packet path: sessions, enabled ones. */
static int pf_nr_sessions;
static int pf_nr_enabled;
/* Serialises the commands and session releases. */
static DEFINE_MUTEX(pf_cmd_lock);

/* The namespaces' and devices' hook lists, for rebracketing and stats. */
static LIST_HEAD(pf_nets);
static LIST_HEAD(pf_devs);
static DEFINE_MUTEX(pf_lists_lock);
static unsigned int pf_net_id __read_mostly;

static struct tracepoint *pf_consume_tp;
static struct genl_family pf_family;

static void pf_sweep(struct work_struct *work);
static DECLARE_DELAYED_WORK(pf_sweeper, pf_sweep);
static void pf_rebracket_all(struct work_struct *work);
static DECLARE_DELAYED_WORK(pf_rebracket_work, pf_rebracket_all);

enum { PF_MCGRP_EVENTS };

static u32 pf_family_bit(u8 pf)
{
	switch (pf) {
	case NFPROTO_IPV4:
		return PKTFATE_FAMILY_IPV4;
	case NFPROTO_IPV6:
		return PKTFATE_FAMILY_IPV6;
	case NFPROTO_ARP:
		return PKTFATE_FAMILY_ARP;
	case NFPROTO_BRIDGE:
		return PKTFATE_FAMILY_BRIDGE;
	case NFPROTO_NETDEV:
		return PKTFATE_FAMILY_NETDEV;
	}
	return 0;
}

static bool pf_match_where(const struct pf_filter *f, const struct pf_where *at)
{
	if (f->netns && f->netns != at->netns)
		return false;
	return !f->families || (f->families & pf_family_bit(at->pf));
}

static bool pf_match_mark(const struct pf_filter *f, u32 mark)
{
	return (mark & f->mark_mask) == (f->mark & f->mark_mask);
}

#define pf_for_each_enabled(s, i)					\
	for ((i) = 0; (i) < PKTFATE_SESSIONS_MAX; (i)++)		\
		if (((s) = rcu_dereference(pf_sessions[i])) &&	\
		    READ_ONCE((s)->enabled))

/* Does an enabled session want packets of this chain tracked? */
static bool pf_wanted(const struct pf_where *at)
{
	struct pf_session *s;
	unsigned int i;

	pf_for_each_enabled(s, i)
		if (pf_match_where(rcu_dereference(s->filter), at))
			return true;
	return false;
}

/*
 * Counts an event of the in-flight table for the module and for each
 * enabled session whose filter selects it (the mark too, when skb is set).
 */
static void pf_count(enum pf_stat st, const struct pf_where *at,
		     const struct sk_buff *skb)
{
	struct pf_session *s;
	unsigned int i;

	this_cpu_inc(pf_pcpu->stats.v[st]);
	pf_for_each_enabled(s, i) {
		const struct pf_filter *f = rcu_dereference(s->filter);

		if ((!at || pf_match_where(f, at)) &&
		    (!skb || pf_match_mark(f, skb->mark)))
			this_cpu_inc(s->cpus->stats.v[st]);
	}
}

/* Context: which stack runs the code, and its kind; -1 in hard irq. */
static int pf_context(unsigned long *owner)
{
	int here;

	if (in_hardirq() || in_nmi())
		return -1;
	*owner = object_is_on_stack(&here) ? (unsigned long)current :
					      PF_IRQ_STACK;
	return in_serving_softirq() ? PF_KIND_SOFTIRQ : PF_KIND_TASK;
}

static unsigned long pf_sp(void)
{
	return (unsigned long)__builtin_frame_address(0);
}

/* A traversal's state lies in a caller's frame of the current stack. */
static bool pf_above(unsigned long state, unsigned long sp)
{
	return state > sp && state - sp < THREAD_SIZE;
}

/* Traversals of this stack whose state lies at or below @state are over. */
static void pf_frames_end(struct pf_pcpu *pc, int kind, unsigned long owner,
			  unsigned long state)
{
	struct pf_frames *fr = &pc->frames[kind];
	struct pf_tail *t = &pc->tail[kind];
	unsigned int i;

	for (i = 0; i < PF_FRAMES; i++) {
		struct pf_frame *f = &fr->f[i];

		if (f->gen && f->owner == owner && f->state <= state)
			f->gen = 0;
	}
	if (t->skb && t->owner == owner && t->state <= state)
		t->skb = 0;
}

/* Remembers a traversal beginning at @state; returns its number. */
static u32 pf_frames_begin(struct pf_pcpu *pc, int kind, unsigned long owner,
			   unsigned long state)
{
	struct pf_frames *fr = &pc->frames[kind];
	struct pf_frame *slot = NULL;
	unsigned int i;
	u32 gen;

	pf_frames_end(pc, kind, owner, state);
	gen = ++fr->gen;
	if (!gen)
		gen = ++fr->gen;
	for (i = 0; i < PF_FRAMES; i++) {
		struct pf_frame *f = &fr->f[i];

		if (!f->gen) {
			slot = f;
			break;
		}
		if (!slot || (s32)(f->gen - slot->gen) < 0)
			slot = f;
	}
	slot->owner = owner;
	slot->state = state;
	slot->gen = gen;
	return gen;
}

/* Is the traversal of @c still under way, and are we inside it? */
static bool pf_live(struct pf_pcpu *pc, int kind, unsigned long owner,
		    unsigned long sp, const struct pf_ctx *c)
{
	const struct pf_frames *fr = &pc->frames[kind];
	unsigned int i;

	if (c->kind != kind || c->owner != owner || !pf_above(c->state, sp))
		return false;
	/*
	 * A task may have moved to another CPU inside the chain (preemptible
	 * kernels): its own stack still holds the traversal's state.
	 */
	if (c->cpu != smp_processor_id())
		return kind == PF_KIND_TASK;
	for (i = 0; i < PF_FRAMES; i++)
		if (fr->f[i].gen == c->gen && fr->f[i].owner == owner)
			return true;
	return false;
}

/*
 * Is @location where a queue's verdict drops a packet? nf_reinject, in
 * vmlinux up to 6.8 and (static, maybe inlined) in nfnetlink_queue since:
 * asked of kallsyms once per location and CPU.
 */
static bool pf_reinject(struct pf_pcpu *pc, int kind, unsigned long location)
{
	static const char name[] = "nf_reinject";
	struct pf_syms *sy = &pc->syms[kind];
	u32 h = hash_long(location, PF_SYMS_BITS);
	char c;

	if (sy->loc[h] == location)
		return sy->reinject[h];
	sprint_symbol_no_offset(sy->buf, location);
	c = sy->buf[sizeof(name) - 1];
	sy->reinject[h] = (!strncmp(sy->buf, name, sizeof(name) - 1) &&
			   (c == '\0' || c == ' ' || c == '.')) ||
			  strstr(sy->buf, " [nfnetlink_queue");
	sy->loc[h] = location;
	return sy->reinject[h];
}

static struct pf_slot *pf_find(const struct sk_buff *skb)
{
	unsigned long key = (unsigned long)skb;
	u32 h = hash_ptr(skb, table_bits);
	unsigned int i;

	for (i = 0; i < PF_TABLE_PROBE; i++) {
		struct pf_slot *s = &pf_table[(h + i) & (pf_table_size - 1)];

		if (smp_load_acquire(&s->skb) == key)
			return s;
	}
	return NULL;
}

static spinlock_t *pf_lock_of(unsigned long key)
{
	return &pf_locks[hash_long(key, PF_LOCK_BITS)];
}

/*
 * The packet's own path changes its entry without a lock while the entry
 * is young: the sweeper and evictions take only entries older than
 * pf_stale, and the path runs with preemption off.
 */
static bool pf_young(const struct pf_slot *s)
{
	return !time_after(jiffies, READ_ONCE(s->since) + pf_stale / 2);
}

/*
 * Takes hold of the entry of @key found at @s for its packet's path:
 * returns the lock held (or NULL when none is needed) in *lock, and false
 * when the entry went away meanwhile.
 */
static bool pf_hold(struct pf_slot *s, unsigned long key, spinlock_t **lock,
		    unsigned long *flags)
{
	*lock = NULL;
	if (pf_young(s))
		return true;
	*lock = pf_lock_of(key);
	spin_lock_irqsave(*lock, *flags);
	if (READ_ONCE(s->skb) == key)
		return true;
	spin_unlock_irqrestore(*lock, *flags);
	*lock = NULL;
	return false;
}

static void pf_release(spinlock_t *lock, unsigned long flags)
{
	if (lock)
		spin_unlock_irqrestore(lock, flags);
}

/* Frees a stale entry for someone other than its packet's path. */
static bool pf_expire(struct pf_slot *s, struct pf_where *at)
{
	unsigned long key = READ_ONCE(s->skb), flags;
	spinlock_t *lock;
	bool done = false;

	if (key <= PF_BUSY || !time_after(jiffies, READ_ONCE(s->since) + pf_stale))
		return false;
	lock = pf_lock_of(key);
	spin_lock_irqsave(lock, flags);
	if (READ_ONCE(s->skb) == key &&
	    time_after(jiffies, READ_ONCE(s->since) + pf_stale)) {
		*at = s->at;
		WRITE_ONCE(s->skb, 0UL);
		done = true;
	}
	spin_unlock_irqrestore(lock, flags);
	return done;
}

/* Claims a free slot for @key (evicting a stale entry if need be). */
static struct pf_slot *pf_claim(u32 h)
{
	struct pf_where at;
	unsigned int i;

	for (i = 0; i < PF_TABLE_PROBE; i++) {
		struct pf_slot *s = &pf_table[(h + i) & (pf_table_size - 1)];

		if (!READ_ONCE(s->skb) && !cmpxchg(&s->skb, 0UL, PF_BUSY))
			return s;
	}
	for (i = 0; i < PF_TABLE_PROBE; i++) {
		struct pf_slot *s = &pf_table[(h + i) & (pf_table_size - 1)];

		if (!pf_expire(s, &at))
			continue;
		pf_count(PF_STALE_EXPIRED, &at, NULL);
		if (!cmpxchg(&s->skb, 0UL, PF_BUSY))
			return s;
	}
	return NULL;
}

static bool pf_same_chain(const struct pf_where *a, const struct pf_where *b)
{
	return a->hook == b->hook && a->pf == b->pf && a->netns == b->netns;
}

/*
 * br_netfilter runs the inet (or arp) chain of a hook from inside the
 * bridge chain of the same hook, and continues the bridge chain after it.
 */
static bool pf_nests(const struct pf_where *outer, const struct pf_where *inner)
{
	return outer->pf == NFPROTO_BRIDGE && inner->pf != NFPROTO_BRIDGE &&
	       inner->pf != NFPROTO_NETDEV && outer->hook == inner->hook &&
	       outer->netns == inner->netns;
}

static void pf_where_init(struct pf_where *at, const struct nf_hook_state *state)
{
	at->netns = state->net->ns.inum;
	at->in_ifindex = state->in ? state->in->ifindex : 0;
	at->out_ifindex = state->out ? state->out->ifindex : 0;
	at->hook = state->hook;
	at->pf = state->pf;
}

/* A packet enters a chain (preemption off). */
static void pf_enter(struct sk_buff *skb, const struct nf_hook_state *state,
		     const struct pf_where *at)
{
	unsigned long key = (unsigned long)skb, st = (unsigned long)state;
	unsigned long owner, sp = pf_sp(), flags;
	struct pf_pcpu *pc = this_cpu_ptr(pf_pcpu);
	struct pf_ctx ctx;
	struct pf_slot *s;
	spinlock_t *lock;
	int kind;
	bool live;

	kind = pf_context(&owner);
	if (kind < 0)
		return;
	ctx.owner = owner;
	ctx.state = st;
	ctx.cpu = smp_processor_id();
	ctx.kind = kind;
	/* A packet passing the end of one chain into the next left its tail. */
	if (pc->tail[kind].skb == key)
		pc->tail[kind].skb = 0;

	s = pf_find(skb);
	if (s && pf_hold(s, key, &lock, &flags)) {
		live = pf_live(pc, kind, owner, sp, &s->ctx);
		ctx.gen = pf_frames_begin(pc, kind, owner, st);
		if (live && s->ctx.state == st && pf_same_chain(&s->at, at)) {
			/* Both first entries while one is moved: one traversal. */
			s->ctx.gen = ctx.gen;
		} else {
			if (live && pf_nests(&s->at, at)) {
				s->outer = s->at;
				s->outer_ctx = s->ctx;
				s->has_outer = true;
			} else {
				/* It left its chain without passing the end. */
				pf_count(PF_STOLEN, &s->at, NULL);
				s->has_outer = false;
			}
			s->at = *at;
			s->ctx = ctx;
			WRITE_ONCE(s->since, jiffies);
		}
		pf_release(lock, flags);
		return;
	}

	ctx.gen = pf_frames_begin(pc, kind, owner, st);
	s = pf_claim(hash_ptr(skb, table_bits));
	if (!s) {
		pf_count(PF_TABLE_FULL, at, NULL);
		return;
	}
	s->since = jiffies;
	s->ctx = ctx;
	s->at = *at;
	s->has_outer = false;
	smp_store_release(&s->skb, key);
	this_cpu_inc(pf_pcpu->stats.v[PF_TRACKED]);
}

/* Is the module's last entry the last of @l's list? */
static bool pf_last(const struct pf_list *l)
{
	const struct nf_hook_entries *e = rcu_dereference(*l->head);

	return !e || !e->num_hook_entries ||
	       e->hooks[e->num_hook_entries - 1].hook == l->exit.hook;
}

static bool pf_first(const struct pf_list *l)
{
	const struct nf_hook_entries *e = rcu_dereference(*l->head);

	return !e || !e->num_hook_entries ||
	       e->hooks[0].hook == l->enter[0].hook;
}

/* A packet reaches the module's last entry of a chain (preemption off). */
static void pf_exit(struct sk_buff *skb, const struct nf_hook_state *state,
		    const struct pf_list *l)
{
	unsigned long key = (unsigned long)skb, st = (unsigned long)state;
	unsigned long owner = 0, sp = pf_sp(), flags;
	struct pf_pcpu *pc = this_cpu_ptr(pf_pcpu);
	struct pf_where at;
	struct pf_slot *s;
	spinlock_t *lock;
	int kind;

	kind = pf_context(&owner);
	/* A traversal resumed from a queue has its state elsewhere. */
	if (kind >= 0 && pf_above(st, sp))
		pf_frames_end(pc, kind, owner, st);
	s = pf_find(skb);
	if (!s || !pf_hold(s, key, &lock, &flags))
		return;
	pf_where_init(&at, state);
	if (pf_same_chain(&s->at, &at)) {
		if (s->has_outer) {
			s->at = s->outer;
			s->ctx = s->outer_ctx;
			s->has_outer = false;
		} else {
			if (kind >= 0 && pf_above(st, sp) && !pf_last(l)) {
				struct pf_tail *t = &pc->tail[kind];

				t->skb = key;
				t->owner = owner;
				t->state = st;
				t->at = s->at;
			}
			WRITE_ONCE(s->skb, 0UL);
		}
	} else if (s->has_outer && pf_same_chain(&s->outer, &at)) {
		/* The inner chain's packet was stolen, the outer ends. */
		pf_count(PF_STOLEN, &s->at, NULL);
		WRITE_ONCE(s->skb, 0UL);
	}
	pf_release(lock, flags);
}

static void pf_want_rebracket(struct pf_list *l)
{
	if (test_bit(PF_LIST_REBRACKET, &l->flags) ||
	    test_and_set_bit(PF_LIST_REBRACKET, &l->flags))
		return;
	mod_delayed_work(PF_WQ, &pf_rebracket_work, 0);
}

static unsigned int pf_hook_enter(void *priv, struct sk_buff *skb,
				  const struct nf_hook_state *state)
{
	struct pf_list *l = priv;
	struct pf_where at;

	if (!READ_ONCE(pf_nr_enabled))
		return NF_ACCEPT;
	pf_where_init(&at, state);
	rcu_read_lock();
	if (pf_wanted(&at)) {
		if (!pf_first(l))
			pf_want_rebracket(l);
		preempt_disable();
		pf_enter(skb, state, &at);
		preempt_enable();
	}
	rcu_read_unlock();
	return NF_ACCEPT;
}

static unsigned int pf_hook_exit(void *priv, struct sk_buff *skb,
				 const struct nf_hook_state *state)
{
	if (!READ_ONCE(pf_nr_sessions))
		return NF_ACCEPT;
	rcu_read_lock();
	preempt_disable();
	pf_exit(skb, state, priv);
	preempt_enable();
	rcu_read_unlock();
	return NF_ACCEPT;
}

/* Takes a token; called with the CPU's lock held. */
static bool pf_rate_ok(const struct pf_session *s, struct pf_scpu *c, u64 now)
{
	u32 rate = READ_ONCE(s->rate);
	u64 cost, cap;

	if (!rate)
		return true;
	cost = div_u64(NSEC_PER_SEC, rate);
	cap = cost * READ_ONCE(s->burst);
	c->tokens = min(c->tokens + (now - c->last), cap);
	c->last = now;
	if (c->tokens < cost)
		return false;
	c->tokens -= cost;
	return true;
}

static void pf_copy_payload(struct pf_record *r, struct sk_buff *skb)
{
	int off = skb_network_offset(skb);
	int len = min_t(int, (int)skb->len - off, PKTFATE_PAYLOAD_MAX);

	r->data_len = 0;
	if (len > 0 && !skb_copy_bits(skb, off, r->data, len))
		r->data_len = len;
}

static void pf_queue(struct pf_session *s, struct sk_buff *skb, void *location,
		     u32 reason, const struct pf_where *at, u8 where, u64 now)
{
	struct pf_scpu *c = this_cpu_ptr(s->cpus);
	struct pf_record *r;
	unsigned long flags;
	bool queued = false;

	spin_lock_irqsave(&c->lock, flags);
	this_cpu_inc(s->cpus->stats.v[PF_SEEN]);
	if (!pf_rate_ok(s, c, now)) {
		this_cpu_inc(s->cpus->stats.v[PF_RATE_LIMITED]);
		goto unlock;
	}
	if (c->count == queue_len) {
		this_cpu_inc(s->cpus->stats.v[PF_QUEUE_FULL]);
		goto unlock;
	}
	r = &c->ring[(c->head + c->count) % queue_len];
	r->ts = now;
	r->skb = (unsigned long)skb;
	r->location = (unsigned long)location;
	r->netns = at->netns;
	r->in_ifindex = at->in_ifindex;
	r->out_ifindex = at->out_ifindex;
	r->mark = skb->mark;
	r->reason = reason;
	r->len = skb->len;
	r->cpu = smp_processor_id();
	r->protocol = ntohs(skb->protocol);
	r->hook = at->hook;
	r->pf = at->pf;
	r->where = where;
	pf_copy_payload(r, skb);
	c->count++;
	queued = true;
unlock:
	spin_unlock_irqrestore(&c->lock, flags);
	if (queued)
		schedule_work(&s->work);
}

/* A packet was freed inside a chain: to every session that wants it. */
static void pf_report(struct sk_buff *skb, void *location, u32 reason,
		      const struct pf_where *at, u8 where)
{
	u64 now = ktime_get_ns();
	struct pf_session *s;
	unsigned int i;

	this_cpu_inc(pf_pcpu->stats.v[PF_SEEN]);
	pf_for_each_enabled(s, i) {
		const struct pf_filter *f = rcu_dereference(s->filter);

		if (pf_match_where(f, at) && pf_match_mark(f, skb->mark))
			pf_queue(s, skb, location, reason, at, where, now);
	}
}

/*
 * The tracepoint's prototype: (skb, location, reason) up to 6.10, then an
 * rx_sk argument (6.11), which later became const; Kbuild tells which.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
#ifdef PF_KFREE_SKB_CONST_RX_SK
#define PF_RX_SK_ARG , const struct sock *rx_sk
#else
#define PF_RX_SK_ARG , struct sock *rx_sk
#endif
#else
#define PF_RX_SK_ARG
#endif

static void pf_kfree(struct sk_buff *skb, void *location, u32 reason)
{
	unsigned long key = (unsigned long)skb, owner, sp = pf_sp(), flags;
	struct pf_pcpu *pc = this_cpu_ptr(pf_pcpu);
	struct pf_ctx ctx;
	struct pf_where at;
	unsigned long since;
	struct pf_slot *s;
	struct pf_tail *t;
	spinlock_t *lock;
	int kind;

	kind = pf_context(&owner);
	if (kind < 0)
		return;
	s = pf_find(skb);
	if (s && pf_hold(s, key, &lock, &flags)) {
		ctx = s->ctx;
		at = s->at;
		since = s->since;
		WRITE_ONCE(s->skb, 0UL);
		pf_release(lock, flags);
		if (pf_live(pc, kind, owner, sp, &ctx)) {
			if (time_after(jiffies, since + pf_stale))
				pf_count(PF_STALE_DROPPED, &at, skb);
			else
				pf_report(skb, location, reason, &at,
					  PKTFATE_WHERE_CHAIN);
		} else if (pf_reinject(pc, kind, (unsigned long)location)) {
			pf_report(skb, location, reason, &at, PKTFATE_WHERE_QUEUE);
		} else {
			/* Stolen, then freed outside the chain's call path. */
			pf_count(PF_STOLEN, &at, NULL);
		}
		return;
	}
	if (!READ_ONCE(pf_nr_enabled))
		return;
	t = &pc->tail[kind];
	if (reason == SKB_DROP_REASON_NETFILTER_DROP && t->skb == key &&
	    t->owner == owner && pf_above(t->state, sp)) {
		at = t->at;
		t->skb = 0;
		pf_report(skb, location, reason, &at, PKTFATE_WHERE_TAIL);
		return;
	}
	/* A queue's verdict on a packet whose entry had expired. */
	if (pf_reinject(pc, kind, (unsigned long)location))
		pf_count(PF_STALE_DROPPED, NULL, skb);
}

static void pf_kfree_skb(void *ignore, struct sk_buff *skb, void *location,
			 enum skb_drop_reason reason PF_RX_SK_ARG)
{
	if (!READ_ONCE(pf_nr_sessions))
		return;
	rcu_read_lock();
	pf_kfree(skb, location, (u32)reason);
	rcu_read_unlock();
}

/* consume_skb gained its location argument in 6.3; Kbuild tells. */
#ifdef PF_CONSUME_SKB_LOCATION
#define PF_CONSUME_ARGS struct sk_buff *skb, void *location
#else
#define PF_CONSUME_ARGS struct sk_buff *skb
#endif

/* A packet consumed while its entry exists left its chain by a steal. */
static void pf_consume_skb(void *ignore, PF_CONSUME_ARGS)
{
	unsigned long key = (unsigned long)skb, flags;
	struct pf_where at;
	struct pf_slot *s;
	spinlock_t *lock;

	if (!READ_ONCE(pf_nr_sessions))
		return;
	rcu_read_lock();
	s = pf_find(skb);
	if (s && pf_hold(s, key, &lock, &flags)) {
		at = s->at;
		WRITE_ONCE(s->skb, 0UL);
		pf_release(lock, flags);
		pf_count(PF_STOLEN, &at, NULL);
	}
	rcu_read_unlock();
}

/* Expires entries older than pf_stale while sessions exist. */
static void pf_sweep(struct work_struct *work)
{
	struct pf_where at;
	unsigned int i;

	for (i = 0; i < pf_table_size; i++) {
		if (!(i % 256))
			cond_resched();
		if (!pf_expire(&pf_table[i], &at))
			continue;
		rcu_read_lock();
		pf_count(PF_STALE_EXPIRED, &at, NULL);
		rcu_read_unlock();
	}
	if (READ_ONCE(pf_nr_sessions))
		schedule_delayed_work(&pf_sweeper, pf_stale / 2);
}

static void pf_table_clear(void)
{
	unsigned int i;

	for (i = 0; i < pf_table_size; i++)
		WRITE_ONCE(pf_table[i].skb, 0UL);
}

/* The size of a DROP message, so that each takes no more than it needs. */
static size_t pf_drop_size(const struct pf_record *r)
{
	return nla_total_size(sizeof(u8)) * 3 +		/* HOOK, FAMILY, WHERE */
	       nla_total_size(sizeof(u32)) * 7 +	/* NETNS ... CPU */
	       nla_total_size(sizeof(u16)) +		/* PROTOCOL */
	       nla_total_size_64bit(sizeof(u64)) * 3 +	/* SKB, TIMESTAMP, LOCATION */
	       nla_total_size(r->data_len);		/* PAYLOAD */
}

static int pf_fill_drop(struct sk_buff *msg, const struct pf_record *r)
{
	void *hdr;

	hdr = genlmsg_put(msg, 0, 0, &pf_family, 0, PKTFATE_CMD_DROP);
	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_u8(msg, PKTFATE_ATTR_HOOK, r->hook) ||
	    nla_put_u8(msg, PKTFATE_ATTR_FAMILY, r->pf) ||
	    nla_put_u8(msg, PKTFATE_ATTR_WHERE, r->where) ||
	    nla_put_u32(msg, PKTFATE_ATTR_NETNS, r->netns) ||
	    nla_put_u32(msg, PKTFATE_ATTR_IN_IFINDEX, r->in_ifindex) ||
	    nla_put_u32(msg, PKTFATE_ATTR_OUT_IFINDEX, r->out_ifindex) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_SKB, r->skb, PKTFATE_ATTR_PAD) ||
	    nla_put_u32(msg, PKTFATE_ATTR_MARK, r->mark) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_TIMESTAMP, r->ts,
			      PKTFATE_ATTR_PAD) ||
	    nla_put_u32(msg, PKTFATE_ATTR_REASON, r->reason) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_LOCATION, r->location,
			      PKTFATE_ATTR_PAD) ||
	    nla_put_u32(msg, PKTFATE_ATTR_LEN, r->len) ||
	    nla_put_u16(msg, PKTFATE_ATTR_PROTOCOL, r->protocol) ||
	    nla_put_u32(msg, PKTFATE_ATTR_CPU, r->cpu) ||
	    nla_put(msg, PKTFATE_ATTR_PAYLOAD, r->data_len, r->data))
		goto nla_put_failure;
	genlmsg_end(msg, hdr);
	return 0;

nla_put_failure:
	genlmsg_cancel(msg, hdr);
	return -EMSGSIZE;
}

static bool pf_pop(struct pf_scpu *c, struct pf_record *r)
{
	unsigned long flags;
	bool ok = false;

	spin_lock_irqsave(&c->lock, flags);
	if (c->count) {
		*r = c->ring[c->head];
		c->head = (c->head + 1) % queue_len;
		c->count--;
		ok = true;
	}
	spin_unlock_irqrestore(&c->lock, flags);
	return ok;
}

/* Sends one record to the session's socket; returns the counter to bump. */
static enum pf_stat pf_send(struct pf_session *s, const struct pf_record *r)
{
	struct sk_buff *msg;
	unsigned int size;

	msg = genlmsg_new(pf_drop_size(r), GFP_KERNEL);
	if (!msg)
		return PF_ALLOC_FAILED;
	size = msg->truesize;
	pf_mem_alloc(PKTFATE_MEM_MESSAGE, size);
	if (pf_fill_drop(msg, r)) {
		nlmsg_free(msg);
		pf_mem_free(PKTFATE_MEM_MESSAGE, size);
		return PF_ALLOC_FAILED;
	}
	/* Released but not yet ended: its port id may be someone else's. */
	if (sock_flag(s->sk, SOCK_DEAD)) {
		nlmsg_free(msg);
		pf_mem_free(PKTFATE_MEM_MESSAGE, size);
		return PF_SEND_FAILED;
	}
	/* Netlink owns the message from here, delivered or not. */
	pf_mem_free(PKTFATE_MEM_MESSAGE, size);
	if (genlmsg_unicast(&init_net, msg, s->portid))
		return PF_SEND_FAILED;
	return PF_REPORTED;
}

static void pf_send_work(struct work_struct *work)
{
	struct pf_session *s = container_of(work, struct pf_session, work);
	int cpu;

	for_each_possible_cpu(cpu) {
		struct pf_scpu *c = per_cpu_ptr(s->cpus, cpu);

		while (pf_pop(c, &s->rec)) {
			/* Counted on this CPU: counters are summed over all. */
			this_cpu_inc(s->cpus->stats.v[pf_send(s, &s->rec)]);
			cond_resched();
		}
	}
}

static struct pf_filter *pf_filter_alloc(void)
{
	struct pf_filter *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (f)
		pf_mem_alloc(PKTFATE_MEM_FILTER, sizeof(*f));
	return f;
}

static void pf_filter_free_rcu(struct pf_filter *f)
{
	pf_mem_free(PKTFATE_MEM_FILTER, sizeof(*f));
	kfree_rcu(f, rcu);
}

static size_t pf_percpu_bytes(size_t size)
{
	return size * num_possible_cpus();
}

static void pf_session_free(struct pf_session *s)
{
	int cpu;

	if (s->cpus) {
		for_each_possible_cpu(cpu) {
			struct pf_scpu *c = per_cpu_ptr(s->cpus, cpu);

			if (!c->ring)
				continue;
			kvfree(c->ring);
			pf_mem_free(PKTFATE_MEM_RING, queue_len * sizeof(*c->ring));
		}
		free_percpu(s->cpus);
		pf_mem_free(PKTFATE_MEM_PERCPU, pf_percpu_bytes(sizeof(*s->cpus)));
	}
	if (rcu_access_pointer(s->filter)) {
		kfree(rcu_access_pointer(s->filter));
		pf_mem_free(PKTFATE_MEM_FILTER, sizeof(struct pf_filter));
	}
	if (s->sk)
		sock_put(s->sk);
	kfree(s);
	pf_mem_free(PKTFATE_MEM_SESSION, sizeof(*s));
}

static struct pf_session *pf_session_alloc(u32 portid, struct sock *sk)
{
	struct pf_session *s;
	struct pf_filter *f;
	int cpu;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return NULL;
	pf_mem_alloc(PKTFATE_MEM_SESSION, sizeof(*s));
	s->portid = portid;
	s->rate = PF_DEFAULT_RATE;
	s->burst = PF_DEFAULT_BURST;
	INIT_WORK(&s->work, pf_send_work);
	s->sk = sk;
	sock_hold(sk);
	f = pf_filter_alloc();
	if (!f)
		goto free_session;
	RCU_INIT_POINTER(s->filter, f);
	s->cpus = alloc_percpu(struct pf_scpu);
	if (!s->cpus)
		goto free_session;
	pf_mem_alloc(PKTFATE_MEM_PERCPU, pf_percpu_bytes(sizeof(*s->cpus)));
	for_each_possible_cpu(cpu) {
		struct pf_scpu *c = per_cpu_ptr(s->cpus, cpu);

		spin_lock_init(&c->lock);
		c->ring = kvcalloc(queue_len, sizeof(*c->ring), GFP_KERNEL);
		if (!c->ring)
			goto free_session;
		pf_mem_alloc(PKTFATE_MEM_RING, queue_len * sizeof(*c->ring));
	}
	return s;

free_session:
	pf_session_free(s);
	return NULL;
}

static struct pf_session *pf_session_find(u32 portid)
{
	unsigned int i;

	for (i = 0; i < PKTFATE_SESSIONS_MAX; i++) {
		struct pf_session *s = rcu_dereference_protected(pf_sessions[i],
				lockdep_is_held(&pf_cmd_lock));

		if (s && s->portid == portid)
			return s;
	}
	return NULL;
}

/* Ends a session: nothing of it stays enabled. Under pf_cmd_lock. */
static void pf_session_release(struct pf_session *s)
{
	RCU_INIT_POINTER(pf_sessions[s->index], NULL);
	if (s->enabled)
		WRITE_ONCE(pf_nr_enabled, pf_nr_enabled - 1);
	WRITE_ONCE(pf_nr_sessions, pf_nr_sessions - 1);
	/* No hook or probe uses the session after this. */
	synchronize_rcu();
	cancel_work_sync(&s->work);
	if (!pf_nr_sessions) {
		cancel_delayed_work_sync(&pf_sweeper);
		/* Nothing reads the table while no session exists. */
		pf_table_clear();
	}
	pf_session_free(s);
}

/* The session a command names (PKTFATE_ATTR_SESSION) or the sender's. */
static struct pf_session *pf_session_of(struct genl_info *info)
{
	struct nlattr *a = info->attrs[PKTFATE_ATTR_SESSION];
	struct pf_session *s;

	s = pf_session_find(a ? nla_get_u32(a) : info->snd_portid);
	if (!s) {
		if (a)
			NL_SET_ERR_MSG_ATTR(info->extack, a, "no such session");
		else
			NL_SET_ERR_MSG_MOD(info->extack,
					   "this socket has no session: name one with PKTFATE_ATTR_SESSION or create one (SESSION_NEW)");
	}
	return s;
}

static int pf_cmd_session_new(struct sk_buff *skb, struct genl_info *info)
{
	struct pf_session *s;
	struct sk_buff *msg;
	unsigned int i;
	void *hdr;
	int err;

	if (!netlink_capable(skb, CAP_SYS_ADMIN)) {
		NL_SET_ERR_MSG_MOD(info->extack,
				   "a session needs CAP_SYS_ADMIN: its events carry kernel addresses");
		return -EPERM;
	}
	msg = genlmsg_new(nla_total_size(sizeof(u32)), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &pf_family, 0, PKTFATE_CMD_SESSION_NEW);
	if (!hdr || nla_put_u32(msg, PKTFATE_ATTR_SESSION, info->snd_portid)) {
		err = -EMSGSIZE;
		goto free_msg;
	}
	genlmsg_end(msg, hdr);

	mutex_lock(&pf_cmd_lock);
	if (pf_session_find(info->snd_portid)) {
		NL_SET_ERR_MSG_MOD(info->extack, "this socket has a session already");
		err = -EEXIST;
		goto unlock;
	}
	for (i = 0; i < PKTFATE_SESSIONS_MAX; i++)
		if (!rcu_access_pointer(pf_sessions[i]))
			break;
	if (i == PKTFATE_SESSIONS_MAX) {
		NL_SET_ERR_MSG_MOD(info->extack,
				   __stringify(PKTFATE_SESSIONS_MAX) " sessions exist, the most the module keeps: end one (close its pktfate)");
		err = -ENOSPC;
		goto unlock;
	}
	s = pf_session_alloc(info->snd_portid, NETLINK_CB(skb).sk);
	if (!s) {
		NL_SET_ERR_MSG_MOD(info->extack, "no memory for a session");
		err = -ENOMEM;
		goto unlock;
	}
	s->index = i;
	rcu_assign_pointer(pf_sessions[i], s);
	WRITE_ONCE(pf_nr_sessions, pf_nr_sessions + 1);
	if (pf_nr_sessions == 1)
		schedule_delayed_work(&pf_sweeper, pf_stale / 2);
	err = genlmsg_reply(msg, info);
	msg = NULL;
	if (err)
		pf_session_release(s);
unlock:
	mutex_unlock(&pf_cmd_lock);
free_msg:
	nlmsg_free(msg);
	return err;
}

static int pf_cmd_enable(struct sk_buff *skb, struct genl_info *info)
{
	u32 rate = PF_DEFAULT_RATE, burst = PF_DEFAULT_BURST;
	struct pf_session *s;
	int err = -ENOENT;

	if (info->attrs[PKTFATE_ATTR_RATE])
		rate = nla_get_u32(info->attrs[PKTFATE_ATTR_RATE]);
	if (info->attrs[PKTFATE_ATTR_BURST])
		burst = nla_get_u32(info->attrs[PKTFATE_ATTR_BURST]);

	mutex_lock(&pf_cmd_lock);
	s = pf_session_of(info);
	if (s) {
		WRITE_ONCE(s->rate, rate);
		WRITE_ONCE(s->burst, burst);
		if (!s->enabled) {
			WRITE_ONCE(s->enabled, true);
			WRITE_ONCE(pf_nr_enabled, pf_nr_enabled + 1);
		}
		err = 0;
	}
	mutex_unlock(&pf_cmd_lock);
	return err;
}

static int pf_cmd_disable(struct sk_buff *skb, struct genl_info *info)
{
	struct pf_session *s;
	int err = -ENOENT;

	mutex_lock(&pf_cmd_lock);
	s = pf_session_of(info);
	if (s) {
		if (s->enabled) {
			WRITE_ONCE(s->enabled, false);
			WRITE_ONCE(pf_nr_enabled, pf_nr_enabled - 1);
		}
		err = 0;
	}
	mutex_unlock(&pf_cmd_lock);
	return err;
}

static int pf_cmd_set_filter(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct pf_filter *f, *old;
	struct pf_session *s;

	if (a[PKTFATE_ATTR_FILTER_MARK] && !a[PKTFATE_ATTR_FILTER_MARK_MASK]) {
		NL_SET_ERR_MSG_MOD(info->extack, "FILTER_MARK needs FILTER_MARK_MASK");
		return -EINVAL;
	}
	f = pf_filter_alloc();
	if (!f)
		return -ENOMEM;
	if (a[PKTFATE_ATTR_FILTER_NETNS])
		f->netns = nla_get_u32(a[PKTFATE_ATTR_FILTER_NETNS]);
	if (a[PKTFATE_ATTR_FILTER_MARK])
		f->mark = nla_get_u32(a[PKTFATE_ATTR_FILTER_MARK]);
	if (a[PKTFATE_ATTR_FILTER_MARK_MASK])
		f->mark_mask = nla_get_u32(a[PKTFATE_ATTR_FILTER_MARK_MASK]);
	if (a[PKTFATE_ATTR_FILTER_FAMILIES])
		f->families = nla_get_u32(a[PKTFATE_ATTR_FILTER_FAMILIES]);

	mutex_lock(&pf_cmd_lock);
	s = pf_session_of(info);
	if (!s) {
		mutex_unlock(&pf_cmd_lock);
		kfree(f);
		pf_mem_free(PKTFATE_MEM_FILTER, sizeof(*f));
		return -ENOENT;
	}
	old = rcu_replace_pointer(s->filter, f, lockdep_is_held(&pf_cmd_lock));
	mutex_unlock(&pf_cmd_lock);
	pf_filter_free_rcu(old);
	return 0;
}

static void pf_sum(struct pf_counters *sum, const struct pf_counters __percpu *pcpu)
{
	int cpu, i;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		const struct pf_counters *c = per_cpu_ptr(pcpu, cpu);

		for (i = 0; i < PF_NSTATS; i++)
			sum->v[i] += READ_ONCE(c->v[i]);
	}
}

static int pf_put_counters(struct sk_buff *msg, const struct pf_counters *sum,
			   bool module)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(pf_stat_attrs); i++) {
		if (!(module ? pf_stat_attrs[i].module : pf_stat_attrs[i].session))
			continue;
		if (nla_put_u64_64bit(msg, pf_stat_attrs[i].attr,
				      sum->v[pf_stat_attrs[i].stat],
				      PKTFATE_ATTR_PAD))
			return -EMSGSIZE;
	}
	return 0;
}

static int pf_put_memory(struct sk_buff *msg)
{
	struct nlattr *mem, *kind;
	int i;

	mem = nla_nest_start(msg, PKTFATE_ATTR_MEMORY);
	if (!mem)
		return -EMSGSIZE;
	for (i = 1; i < __PKTFATE_MEM_MAX; i++) {
		const struct pf_mem *m = &pf_mem[i];

		kind = nla_nest_start(msg, i);
		if (!kind ||
		    nla_put_u64_64bit(msg, PKTFATE_ATTR_MEM_ALLOC_BYTES,
				      atomic64_read(&m->alloc_bytes), PKTFATE_ATTR_PAD) ||
		    nla_put_u64_64bit(msg, PKTFATE_ATTR_MEM_FREED_BYTES,
				      atomic64_read(&m->freed_bytes), PKTFATE_ATTR_PAD) ||
		    nla_put_u64_64bit(msg, PKTFATE_ATTR_MEM_ALLOC_OBJECTS,
				      atomic64_read(&m->alloc_objects), PKTFATE_ATTR_PAD) ||
		    nla_put_u64_64bit(msg, PKTFATE_ATTR_MEM_FREED_OBJECTS,
				      atomic64_read(&m->freed_objects), PKTFATE_ATTR_PAD))
			return -EMSGSIZE;
		nla_nest_end(msg, kind);
	}
	nla_nest_end(msg, mem);
	return 0;
}

static u32 pf_table_used(void)
{
	unsigned int i;
	u32 n = 0;

	for (i = 0; i < pf_table_size; i++)
		if (READ_ONCE(pf_table[i].skb) > PF_BUSY)
			n++;
	return n;
}

/* Hook lists where INT_MAX hooks older than the module's run after it. */
static u32 pf_tail_chains(void)
{
	struct pf_net *pn;
	struct pf_dev *pd;
	unsigned int i;
	u32 n = 0;

	mutex_lock(&pf_lists_lock);
	rcu_read_lock();
	list_for_each_entry(pn, &pf_nets, node)
		for (i = 0; i < PF_NET_LISTS; i++)
			if (pn->lists[i].registered && !pf_last(&pn->lists[i]))
				n++;
	list_for_each_entry(pd, &pf_devs, node)
		for (i = 0; i < PF_DEV_LISTS; i++)
			if (pd->lists[i].registered && !pf_last(&pd->lists[i]))
				n++;
	rcu_read_unlock();
	mutex_unlock(&pf_lists_lock);
	return n;
}

static u32 pf_families_covered(void)
{
	u32 f = PKTFATE_FAMILY_IPV4 | PKTFATE_FAMILY_IPV6;

	if (IS_ENABLED(CONFIG_NETFILTER_FAMILY_ARP))
		f |= PKTFATE_FAMILY_ARP;
	if (IS_ENABLED(CONFIG_NETFILTER_FAMILY_BRIDGE))
		f |= PKTFATE_FAMILY_BRIDGE;
	if (IS_ENABLED(CONFIG_NETFILTER_INGRESS) ||
	    IS_ENABLED(CONFIG_NETFILTER_EGRESS))
		f |= PKTFATE_FAMILY_NETDEV;
	return f;
}

static u32 pf_netdev_hooks_covered(void)
{
	u32 h = 0;

	if (IS_ENABLED(CONFIG_NETFILTER_INGRESS))
		h |= 1U << NF_NETDEV_INGRESS;
	if (IS_ENABLED(CONFIG_NETFILTER_EGRESS))
		h |= 1U << NF_NETDEV_EGRESS;
	return h;
}

static int pf_fill_stats(struct sk_buff *msg, struct genl_info *info,
			 const struct pf_session *s)
{
	struct pf_counters sum;
	struct nlattr *nest;
	void *hdr;

	hdr = genlmsg_put_reply(msg, info, &pf_family, 0, PKTFATE_CMD_GET_STATS);
	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_u32(msg, PKTFATE_ATTR_QUEUE_LEN, queue_len) ||
	    nla_put_u32(msg, PKTFATE_ATTR_SESSIONS, pf_nr_sessions) ||
	    nla_put_u32(msg, PKTFATE_ATTR_SESSIONS_MAX, PKTFATE_SESSIONS_MAX) ||
	    nla_put_u32(msg, PKTFATE_ATTR_TABLE_SIZE, pf_table_size) ||
	    nla_put_u32(msg, PKTFATE_ATTR_TABLE_USED, pf_table_used()) ||
	    nla_put_u32(msg, PKTFATE_ATTR_STALE_MS, jiffies_to_msecs(pf_stale)) ||
	    nla_put_u32(msg, PKTFATE_ATTR_FAMILIES_COVERED, pf_families_covered()) ||
	    nla_put_u32(msg, PKTFATE_ATTR_NETDEV_HOOKS_COVERED,
			pf_netdev_hooks_covered()) ||
	    nla_put_u32(msg, PKTFATE_ATTR_TAIL_CHAINS, pf_tail_chains()) ||
	    nla_put_u32(msg, PKTFATE_ATTR_HOOK_FAILURES,
			atomic_read(&pf_hook_failures)))
		goto nla_put_failure;

	nest = nla_nest_start(msg, PKTFATE_ATTR_MODULE_STATS);
	if (!nest)
		goto nla_put_failure;
	pf_sum(&sum, &pf_pcpu->stats);
	if (pf_put_counters(msg, &sum, true) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_REBRACKETED,
			      atomic64_read(&pf_rebracketed), PKTFATE_ATTR_PAD))
		goto nla_put_failure;
	nla_nest_end(msg, nest);
	if (pf_put_memory(msg))
		goto nla_put_failure;

	if (s) {
		const struct pf_filter *f = rcu_dereference_protected(s->filter,
				lockdep_is_held(&pf_cmd_lock));

		pf_sum(&sum, &s->cpus->stats);
		if (nla_put_u32(msg, PKTFATE_ATTR_SESSION, s->portid) ||
		    nla_put_u8(msg, PKTFATE_ATTR_ENABLED, s->enabled) ||
		    nla_put_u32(msg, PKTFATE_ATTR_RATE, s->rate) ||
		    nla_put_u32(msg, PKTFATE_ATTR_BURST, s->burst) ||
		    nla_put_u32(msg, PKTFATE_ATTR_FILTER_NETNS, f->netns) ||
		    nla_put_u32(msg, PKTFATE_ATTR_FILTER_MARK, f->mark) ||
		    nla_put_u32(msg, PKTFATE_ATTR_FILTER_MARK_MASK, f->mark_mask) ||
		    nla_put_u32(msg, PKTFATE_ATTR_FILTER_FAMILIES, f->families) ||
		    pf_put_counters(msg, &sum, false))
			goto nla_put_failure;
	}
	genlmsg_end(msg, hdr);
	return 0;

nla_put_failure:
	genlmsg_cancel(msg, hdr);
	return -EMSGSIZE;
}

static int pf_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct pf_session *s = NULL;
	struct sk_buff *msg;
	int err;

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	mutex_lock(&pf_cmd_lock);
	if (info->attrs[PKTFATE_ATTR_SESSION]) {
		s = pf_session_of(info);
		if (!s) {
			err = -ENOENT;
			goto unlock;
		}
	} else {
		s = pf_session_find(info->snd_portid);
	}
	err = pf_fill_stats(msg, info, s);
	if (err)
		NL_SET_ERR_MSG_MOD(info->extack, "statistics do not fit a message");
unlock:
	mutex_unlock(&pf_cmd_lock);
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	return genlmsg_reply(msg, info);
}

static struct netlink_range_validation pf_burst_range = {
	.min = 1,
	.max = PF_MAX_BURST,
};

static const struct nla_policy pf_enable_policy[PKTFATE_ATTR_MAX + 1] = {
	[PKTFATE_ATTR_SESSION] = { .type = NLA_U32 },
	[PKTFATE_ATTR_RATE] = { .type = NLA_U32 },
	[PKTFATE_ATTR_BURST] = NLA_POLICY_FULL_RANGE(NLA_U32, &pf_burst_range),
};

static const struct nla_policy pf_filter_policy[PKTFATE_ATTR_MAX + 1] = {
	[PKTFATE_ATTR_SESSION] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_NETNS] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_MARK] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_MARK_MASK] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_FAMILIES] =
		NLA_POLICY_MASK(NLA_U32, PKTFATE_FAMILY_MASK),
};

/* DISABLE and GET_STATS: the session, nothing else. */
static const struct nla_policy pf_session_policy[PKTFATE_ATTR_MAX + 1] = {
	[PKTFATE_ATTR_SESSION] = { .type = NLA_U32 },
};

/* SESSION_NEW takes no attribute: any one is refused. */
static const struct nla_policy pf_none_policy[PKTFATE_ATTR_MAX + 1] = {};

static const struct genl_ops pf_ops[] = {
	{
		.cmd = PKTFATE_CMD_ENABLE,
		.doit = pf_cmd_enable,
		.policy = pf_enable_policy,
		.maxattr = PKTFATE_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = PKTFATE_CMD_DISABLE,
		.doit = pf_cmd_disable,
		.policy = pf_session_policy,
		.maxattr = PKTFATE_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = PKTFATE_CMD_SET_FILTER,
		.doit = pf_cmd_set_filter,
		.policy = pf_filter_policy,
		.maxattr = PKTFATE_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = PKTFATE_CMD_GET_STATS,
		.doit = pf_cmd_get_stats,
		.policy = pf_session_policy,
		.maxattr = PKTFATE_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = PKTFATE_CMD_SESSION_NEW,
		.doit = pf_cmd_session_new,
		.policy = pf_none_policy,
		.maxattr = PKTFATE_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
};

static const struct genl_multicast_group pf_mcgrps[] = {
	[PF_MCGRP_EVENTS] = {
		.name = PKTFATE_GENL_MCGRP_EVENTS,
		.flags = GENL_MCAST_CAP_SYS_ADMIN,
	},
};

static struct genl_family pf_family __ro_after_init = {
	.name = PKTFATE_GENL_NAME,
	.version = PKTFATE_GENL_VERSION,
	.maxattr = PKTFATE_ATTR_MAX,
	.module = THIS_MODULE,
	.ops = pf_ops,
	.n_ops = ARRAY_SIZE(pf_ops),
	.mcgrps = pf_mcgrps,
	.n_mcgrps = ARRAY_SIZE(pf_mcgrps),
};

/* A session's socket closed (also when its process was killed). */
static int pf_netlink_event(struct notifier_block *nb, unsigned long event,
			    void *ptr)
{
	struct netlink_notify *n = ptr;
	struct pf_session *s;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC ||
	    !net_eq(n->net, &init_net))
		return NOTIFY_DONE;
	mutex_lock(&pf_cmd_lock);
	s = pf_session_find(n->portid);
	/* Not a new socket that got the released one's port id. */
	if (s && sock_flag(s->sk, SOCK_DEAD))
		pf_session_release(s);
	mutex_unlock(&pf_cmd_lock);
	return NOTIFY_DONE;
}

static struct notifier_block pf_netlink_nb = {
	.notifier_call = pf_netlink_event,
};

static void pf_list_init(struct pf_list *l, struct net *net,
			 struct net_device *dev, u8 pf, u8 hook,
			 struct nf_hook_entries __rcu **head)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(l->enter); i++) {
		l->enter[i].hook = pf_hook_enter;
		l->enter[i].pf = pf;
		l->enter[i].hooknum = hook;
		l->enter[i].priority = INT_MIN;
		l->enter[i].priv = l;
		l->enter[i].dev = dev;
	}
	l->exit.hook = pf_hook_exit;
	l->exit.pf = pf;
	l->exit.hooknum = hook;
	l->exit.priority = INT_MAX;
	l->exit.priv = l;
	l->exit.dev = dev;
	l->head = head;
	l->net = net;
	l->moved = jiffies - HZ;
}

static void pf_list_register(struct pf_list *l)
{
	int err;

	err = nf_register_net_hook(l->net, &l->enter[0]);
	if (!err) {
		err = nf_register_net_hook(l->net, &l->exit);
		if (err)
			nf_unregister_net_hook(l->net, &l->enter[0]);
	}
	if (err) {
		atomic_inc(&pf_hook_failures);
		pr_warn_ratelimited("cannot join hook list (family %u, hook %u): %d\n",
				    l->exit.pf, l->exit.hooknum, err);
		return;
	}
	l->active = 0;
	l->registered = true;
}

static void pf_list_unregister(struct pf_list *l)
{
	if (!l->registered)
		return;
	nf_unregister_net_hook(l->net, &l->enter[l->active]);
	nf_unregister_net_hook(l->net, &l->exit);
	l->registered = false;
}

/*
 * Hooks of equal priority run newest first: an INT_MIN hook registered
 * after the module's first entry runs before it. Registering the entry's
 * twin moves the module back in front; the old one then goes. In between
 * both run, which pf_enter takes for one traversal.
 */
static bool pf_rebracket(struct pf_list *l)
{
	bool first;

	if (!test_bit(PF_LIST_REBRACKET, &l->flags))
		return false;
	rcu_read_lock();
	first = !l->registered || pf_first(l);
	rcu_read_unlock();
	/*
	 * At most once a second (never a tug of war with another such
	 * hook): until then the flag stays set, the packet path quiet.
	 */
	if (!first && time_before(jiffies, l->moved + HZ))
		return true;
	clear_bit(PF_LIST_REBRACKET, &l->flags);
	if (first)
		return false;
	if (nf_register_net_hook(l->net, &l->enter[!l->active])) {
		atomic_inc(&pf_hook_failures);
		return false;
	}
	nf_unregister_net_hook(l->net, &l->enter[l->active]);
	l->active = !l->active;
	l->moved = jiffies;
	atomic64_inc(&pf_rebracketed);
	return false;
}

static void pf_rebracket_all(struct work_struct *work)
{
	struct pf_net *pn;
	struct pf_dev *pd;
	bool again = false;
	unsigned int i;

	mutex_lock(&pf_lists_lock);
	list_for_each_entry(pn, &pf_nets, node)
		for (i = 0; i < PF_NET_LISTS; i++)
			again |= pf_rebracket(&pn->lists[i]);
	list_for_each_entry(pd, &pf_devs, node)
		for (i = 0; i < PF_DEV_LISTS; i++)
			again |= pf_rebracket(&pd->lists[i]);
	mutex_unlock(&pf_lists_lock);
	if (again)
		queue_delayed_work(PF_WQ, &pf_rebracket_work, HZ);
}

static struct nf_hook_entries __rcu **pf_net_head(struct net *net, u8 pf, u8 hook)
{
	switch (pf) {
	case NFPROTO_IPV4:
		return &net->nf.hooks_ipv4[hook];
	case NFPROTO_IPV6:
		return &net->nf.hooks_ipv6[hook];
#ifdef CONFIG_NETFILTER_FAMILY_ARP
	case NFPROTO_ARP:
		return &net->nf.hooks_arp[hook];
#endif
#ifdef CONFIG_NETFILTER_FAMILY_BRIDGE
	case NFPROTO_BRIDGE:
		return &net->nf.hooks_bridge[hook];
#endif
	}
	return NULL;
}

static int __net_init pf_net_init(struct net *net)
{
	struct pf_net *pn = net_generic(net, pf_net_id);
	unsigned int i;

	for (i = 0; i < PF_NET_LISTS; i++) {
		u8 pf = pf_net_hooks[i].pf, hook = pf_net_hooks[i].hook;

		pf_list_init(&pn->lists[i], net, NULL, pf, hook,
			     pf_net_head(net, pf, hook));
		pf_list_register(&pn->lists[i]);
	}
	mutex_lock(&pf_lists_lock);
	list_add(&pn->node, &pf_nets);
	mutex_unlock(&pf_lists_lock);
	return 0;
}

static void __net_exit pf_net_exit(struct net *net)
{
	struct pf_net *pn = net_generic(net, pf_net_id);
	unsigned int i;

	mutex_lock(&pf_lists_lock);
	list_del(&pn->node);
	for (i = 0; i < PF_NET_LISTS; i++)
		pf_list_unregister(&pn->lists[i]);
	mutex_unlock(&pf_lists_lock);
}

/* The hooks' priv is in net_generic storage: freed right after this. */
static void __net_exit pf_net_exit_batch(struct list_head *net_exit_list)
{
	synchronize_net();
}

static struct pernet_operations pf_net_ops = {
	.init = pf_net_init,
	.exit = pf_net_exit,
	.exit_batch = pf_net_exit_batch,
	.id = &pf_net_id,
	.size = sizeof(struct pf_net),
};

static void pf_dev_add(struct net_device *dev)
{
	struct pf_dev *pd;

	pd = kzalloc(sizeof(*pd), GFP_KERNEL);
	if (!pd) {
		atomic_add(PF_DEV_LISTS, &pf_hook_failures);
		return;
	}
	pf_mem_alloc(PKTFATE_MEM_HOOKS, sizeof(*pd));
	pd->dev = dev;
#ifdef CONFIG_NETFILTER_INGRESS
	pf_list_init(&pd->lists[PF_DEV_INGRESS], dev_net(dev), dev,
		     NFPROTO_NETDEV, NF_NETDEV_INGRESS, &dev->nf_hooks_ingress);
	pf_list_register(&pd->lists[PF_DEV_INGRESS]);
#endif
#ifdef CONFIG_NETFILTER_EGRESS
	pf_list_init(&pd->lists[PF_DEV_EGRESS], dev_net(dev), dev,
		     NFPROTO_NETDEV, NF_NETDEV_EGRESS, &dev->nf_hooks_egress);
	pf_list_register(&pd->lists[PF_DEV_EGRESS]);
#endif
	mutex_lock(&pf_lists_lock);
	list_add(&pd->node, &pf_devs);
	mutex_unlock(&pf_lists_lock);
}

static void pf_dev_del(struct net_device *dev)
{
	struct pf_dev *pd, *found = NULL;
	unsigned int i;

	mutex_lock(&pf_lists_lock);
	list_for_each_entry(pd, &pf_devs, node) {
		if (pd->dev == dev) {
			found = pd;
			break;
		}
	}
	if (found) {
		list_del(&found->node);
		for (i = 0; i < PF_DEV_LISTS; i++)
			pf_list_unregister(&found->lists[i]);
	}
	mutex_unlock(&pf_lists_lock);
	if (!found)
		return;
	pf_mem_free(PKTFATE_MEM_HOOKS, sizeof(*found));
	/* Hooks running now still read their list through priv. */
	kfree_rcu(found, rcu);
}

static int pf_netdev_event(struct notifier_block *nb, unsigned long event,
			   void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);

	switch (event) {
	case NETDEV_REGISTER:
		pf_dev_add(dev);
		break;
	case NETDEV_UNREGISTER:
		pf_dev_del(dev);
		break;
	}
	return NOTIFY_DONE;
}

static struct notifier_block pf_netdev_nb = {
	.notifier_call = pf_netdev_event,
};

static void pf_find_consume(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "consume_skb"))
		pf_consume_tp = tp;
}

static void pf_free_globals(void)
{
	if (pf_pcpu) {
		free_percpu(pf_pcpu);
		pf_mem_free(PKTFATE_MEM_PERCPU, pf_percpu_bytes(sizeof(*pf_pcpu)));
		pf_pcpu = NULL;
	}
	if (pf_table) {
		kvfree(pf_table);
		pf_mem_free(PKTFATE_MEM_TABLE, pf_table_size * sizeof(*pf_table));
		pf_table = NULL;
	}
}

static int __init pf_alloc_globals(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(pf_locks); i++)
		spin_lock_init(&pf_locks[i]);
	pf_table = kvcalloc(pf_table_size, sizeof(*pf_table), GFP_KERNEL);
	if (!pf_table)
		return -ENOMEM;
	pf_mem_alloc(PKTFATE_MEM_TABLE, pf_table_size * sizeof(*pf_table));
	pf_pcpu = alloc_percpu(struct pf_pcpu);
	if (!pf_pcpu) {
		pf_free_globals();
		return -ENOMEM;
	}
	pf_mem_alloc(PKTFATE_MEM_PERCPU, pf_percpu_bytes(sizeof(*pf_pcpu)));
	return 0;
}

static int __init pf_init(void)
{
	int err;

	if (!queue_len || queue_len > 4096) {
		pr_err("queue_len must be 1..4096\n");
		return -EINVAL;
	}
	if (table_bits < 6 || table_bits > 16) {
		pr_err("table_bits must be 6..16\n");
		return -EINVAL;
	}
	if (stale_ms < 100 || stale_ms > 60000) {
		pr_err("stale_ms must be 100..60000\n");
		return -EINVAL;
	}
	pf_table_size = 1U << table_bits;
	pf_stale = msecs_to_jiffies(stale_ms);
	for_each_kernel_tracepoint(pf_find_consume, NULL);
	if (!pf_consume_tp) {
		pr_err("no consume_skb tracepoint\n");
		return -ENOENT;
	}
	err = pf_alloc_globals();
	if (err)
		return err;
	err = register_pernet_subsys(&pf_net_ops);
	if (err)
		goto free_globals;
	err = register_netdevice_notifier(&pf_netdev_nb);
	if (err)
		goto unregister_pernet;
	err = register_trace_kfree_skb(pf_kfree_skb, NULL);
	if (err)
		goto unregister_netdev;
	err = tracepoint_probe_register(pf_consume_tp, pf_consume_skb, NULL);
	if (err)
		goto unregister_kfree;
	err = netlink_register_notifier(&pf_netlink_nb);
	if (err)
		goto unregister_consume;
	err = genl_register_family(&pf_family);
	if (err)
		goto unregister_netlink;
	return 0;

unregister_netlink:
	netlink_unregister_notifier(&pf_netlink_nb);
unregister_consume:
	tracepoint_probe_unregister(pf_consume_tp, pf_consume_skb, NULL);
unregister_kfree:
	unregister_trace_kfree_skb(pf_kfree_skb, NULL);
	tracepoint_synchronize_unregister();
unregister_netdev:
	unregister_netdevice_notifier(&pf_netdev_nb);
unregister_pernet:
	unregister_pernet_subsys(&pf_net_ops);
	cancel_delayed_work_sync(&pf_rebracket_work);
	rcu_barrier();
free_globals:
	pf_free_globals();
	return err;
}

static void __exit pf_exit_module(void)
{
	unsigned int i;

	/* No command and no socket release reaches a session after this. */
	genl_unregister_family(&pf_family);
	netlink_unregister_notifier(&pf_netlink_nb);
	mutex_lock(&pf_cmd_lock);
	for (i = 0; i < PKTFATE_SESSIONS_MAX; i++) {
		struct pf_session *s = rcu_dereference_protected(pf_sessions[i],
				lockdep_is_held(&pf_cmd_lock));

		if (s)
			pf_session_release(s);
	}
	mutex_unlock(&pf_cmd_lock);
	tracepoint_probe_unregister(pf_consume_tp, pf_consume_skb, NULL);
	unregister_trace_kfree_skb(pf_kfree_skb, NULL);
	tracepoint_synchronize_unregister();
	/* Unregisters the hooks of every device and namespace. */
	unregister_netdevice_notifier(&pf_netdev_nb);
	unregister_pernet_subsys(&pf_net_ops);
	cancel_delayed_work_sync(&pf_rebracket_work);
	/* Devices' hook lists are freed after a grace period. */
	rcu_barrier();
	pf_free_globals();
}

module_init(pf_init);
module_exit(pf_exit_module);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pktfate");
MODULE_DESCRIPTION("Report packets dropped inside netfilter hook chains");
MODULE_ALIAS_GENL_FAMILY(PKTFATE_GENL_NAME);
