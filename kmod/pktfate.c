// SPDX-License-Identifier: GPL-2.0
/*
 * pktfate.ko - report packets dropped inside netfilter hook chains.
 *
 * Every inet hook (IPv4 and IPv6, all five hooks, in every network
 * namespace) gets two entries: one at the first priority, which records the
 * skb in a small in-flight table, and one at the last, which forgets it. A
 * probe on the kfree_skb tracepoint looks the freed skb up: found, it was
 * freed between entering and leaving that hook's chain, that is dropped
 * inside the hook. Such drops are queued per CPU (bounded, rate limited) and
 * sent from a work item to the "events" multicast group of the generic
 * netlink family "pktfate" (include/uapi/linux/pktfate.h).
 *
 * Limits, by design: the in-flight table holds PF_TABLE_SIZE packets (more
 * are counted, not tracked); a packet a hook stole (NF_STOLEN, NF_QUEUE) stays
 * in the table until its slot is reused or PF_STALE passes; drops in an
 * INT_MAX hook registered before the module (see pf_nf_ops) are missed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/hash.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/netdevice.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/percpu.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/tracepoint.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <trace/events/skb.h>

#include <uapi/linux/pktfate.h>

#ifndef GENL_MCAST_CAP_SYS_ADMIN
/* Kernel 6.7, and stable kernels with the backport (6.1.y has it). */
#error "pktfate needs GENL_MCAST_CAP_SYS_ADMIN"
#endif

/* In-flight table: packets between the first and the last hook entry. */
#define PF_TABLE_BITS	11
#define PF_TABLE_SIZE	(1U << PF_TABLE_BITS)
#define PF_TABLE_PROBE	4
/* An entry older than this (jiffies) is a packet a hook stole: ignore it. */
#define PF_STALE	HZ

#define PF_DEFAULT_RATE		10000
#define PF_DEFAULT_BURST	1000
#define PF_MAX_BURST		(1U << 20)

static unsigned int queue_len = 256;
module_param(queue_len, uint, 0444);
MODULE_PARM_DESC(queue_len, "drops queued per CPU (1-4096, default 256)");

struct pf_slot {
	unsigned long skb;	/* 0: free */
	unsigned long since;	/* jiffies: cheaper than a clock per packet */
	u32 netns;
	int in_ifindex;
	int out_ifindex;
	u8 hook;
	u8 pf;
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
	u8 data[PKTFATE_PAYLOAD_MAX];
};

struct pf_stats {
	u64 seen;
	u64 reported;
	u64 rate_limited;
	u64 queue_full;
	u64 alloc_failed;
	u64 send_failed;
	u64 table_full;
};

/* Per-CPU queue and token bucket, under lock (any context, irqs off). */
struct pf_cpu {
	spinlock_t lock;
	unsigned int head;
	unsigned int count;
	u64 tokens;	/* in ns of refill time */
	u64 last;
	struct pf_record *ring;
	struct pf_stats stats;
};

struct pf_filter {
	u32 netns;
	u32 mark;
	u32 mark_mask;
	u32 families;
	struct rcu_head rcu;
};

static struct pf_slot pf_table[PF_TABLE_SIZE];
static struct pf_cpu __percpu *pf_cpus;
static struct pf_filter __rcu *pf_filter;
static bool pf_enabled;
static u32 pf_rate = PF_DEFAULT_RATE;
static u32 pf_burst = PF_DEFAULT_BURST;
/* Serialises the commands (genl runs them under genl_lock already). */
static DEFINE_MUTEX(pf_cmd_lock);

static void pf_send_work(struct work_struct *work);
static DECLARE_WORK(pf_work, pf_send_work);
static struct genl_family pf_family;

enum { PF_MCGRP_EVENTS };

static u32 pf_family_bit(u8 pf)
{
	return pf == NFPROTO_IPV6 ? PKTFATE_FAMILY_IPV6 : PKTFATE_FAMILY_IPV4;
}

static struct pf_slot *pf_find(const struct sk_buff *skb)
{
	unsigned long key = (unsigned long)skb;
	u32 h = hash_ptr(skb, PF_TABLE_BITS);
	unsigned int i;

	for (i = 0; i < PF_TABLE_PROBE; i++) {
		struct pf_slot *s = &pf_table[(h + i) & (PF_TABLE_SIZE - 1)];

		if (READ_ONCE(s->skb) == key)
			return s;
	}
	return NULL;
}

static void pf_track(struct sk_buff *skb, const struct nf_hook_state *state)
{
	unsigned long key = (unsigned long)skb;
	u32 h = hash_ptr(skb, PF_TABLE_BITS);
	struct pf_slot *s = pf_find(skb);
	unsigned int i;

	for (i = 0; !s && i < PF_TABLE_PROBE; i++) {
		struct pf_slot *c = &pf_table[(h + i) & (PF_TABLE_SIZE - 1)];

		if (!READ_ONCE(c->skb) && !cmpxchg(&c->skb, 0UL, key))
			s = c;
	}
	if (!s) {
		this_cpu_inc(pf_cpus->stats.table_full);
		return;
	}
	/*
	 * Only this packet's own path reads these fields back (its exit hook
	 * or its kfree_skb), in program order after this store.
	 */
	s->since = jiffies;
	s->netns = state->net->ns.inum;
	s->in_ifindex = state->in ? state->in->ifindex : 0;
	s->out_ifindex = state->out ? state->out->ifindex : 0;
	s->hook = state->hook;
	s->pf = state->pf;
}

static unsigned int pf_hook_enter(void *priv, struct sk_buff *skb,
				  const struct nf_hook_state *state)
{
	const struct pf_filter *f;

	if (!READ_ONCE(pf_enabled))
		return NF_ACCEPT;
	f = rcu_dereference(pf_filter);
	if (f->netns && f->netns != state->net->ns.inum)
		return NF_ACCEPT;
	if (f->families && !(f->families & pf_family_bit(state->pf)))
		return NF_ACCEPT;
	pf_track(skb, state);
	return NF_ACCEPT;
}

static unsigned int pf_hook_exit(void *priv, struct sk_buff *skb,
				 const struct nf_hook_state *state)
{
	struct pf_slot *s;

	if (!READ_ONCE(pf_enabled))
		return NF_ACCEPT;
	s = pf_find(skb);
	if (s)
		WRITE_ONCE(s->skb, 0UL);
	return NF_ACCEPT;
}

/* Takes a token; called with the CPU's lock held. */
static bool pf_rate_ok(struct pf_cpu *c, u64 now)
{
	u32 rate = READ_ONCE(pf_rate);
	u64 cost, cap;

	if (!rate)
		return true;
	cost = div_u64(NSEC_PER_SEC, rate);
	cap = cost * READ_ONCE(pf_burst);
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

static void pf_report(struct sk_buff *skb, void *location, u32 reason,
		      const struct pf_slot *slot, u64 now)
{
	struct pf_cpu *c = this_cpu_ptr(pf_cpus);
	const struct pf_filter *f;
	struct pf_record *r;
	unsigned long flags;
	bool ok = true;

	rcu_read_lock();
	f = rcu_dereference(pf_filter);
	if ((skb->mark & f->mark_mask) != (f->mark & f->mark_mask))
		ok = false;
	rcu_read_unlock();
	if (!ok)
		return;

	spin_lock_irqsave(&c->lock, flags);
	c->stats.seen++;
	if (!genl_has_listeners(&pf_family, &init_net, PF_MCGRP_EVENTS)) {
		c->stats.send_failed++;
		goto unlock;
	}
	if (!pf_rate_ok(c, now)) {
		c->stats.rate_limited++;
		goto unlock;
	}
	if (c->count == queue_len) {
		c->stats.queue_full++;
		goto unlock;
	}
	r = &c->ring[(c->head + c->count) % queue_len];
	r->ts = now;
	r->skb = (unsigned long)skb;
	r->location = (unsigned long)location;
	r->netns = slot->netns;
	r->in_ifindex = slot->in_ifindex;
	r->out_ifindex = slot->out_ifindex;
	r->mark = skb->mark;
	r->reason = reason;
	r->len = skb->len;
	r->cpu = smp_processor_id();
	r->protocol = ntohs(skb->protocol);
	r->hook = slot->hook;
	r->pf = slot->pf;
	pf_copy_payload(r, skb);
	c->count++;
	schedule_work(&pf_work);
unlock:
	spin_unlock_irqrestore(&c->lock, flags);
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

static void pf_kfree_skb(void *ignore, struct sk_buff *skb, void *location,
			 enum skb_drop_reason reason PF_RX_SK_ARG)
{
	struct pf_slot *s, slot;
	u64 now;

	if (!READ_ONCE(pf_enabled))
		return;
	s = pf_find(skb);
	if (!s)
		return;
	slot = *s;
	WRITE_ONCE(s->skb, 0UL);
	if (time_after(jiffies, slot.since + PF_STALE))
		return;
	now = ktime_get_ns();
	pf_report(skb, location, (u32)reason, &slot, now);
}

/* The size of a DROP message, so that each takes no more than it needs. */
static size_t pf_drop_size(const struct pf_record *r)
{
	return nla_total_size(sizeof(u8)) * 2 +		/* HOOK, FAMILY */
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

static bool pf_pop(struct pf_cpu *c, struct pf_record *r)
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

static void pf_count(int cpu, size_t field)
{
	struct pf_cpu *c = per_cpu_ptr(pf_cpus, cpu);
	unsigned long flags;

	spin_lock_irqsave(&c->lock, flags);
	((u64 *)&c->stats)[field / sizeof(u64)]++;
	spin_unlock_irqrestore(&c->lock, flags);
}

static void pf_send_work(struct work_struct *work)
{
	struct pf_record *r;
	int cpu;

	r = kmalloc(sizeof(*r), GFP_KERNEL);
	for_each_possible_cpu(cpu) {
		struct pf_cpu *c = per_cpu_ptr(pf_cpus, cpu);
		struct pf_record spill;

		while (pf_pop(c, r ? r : &spill)) {
			struct sk_buff *msg;
			int err;

			if (!r) {
				pf_count(cpu, offsetof(struct pf_stats, alloc_failed));
				continue;
			}
			msg = genlmsg_new(pf_drop_size(r), GFP_KERNEL);
			if (!msg) {
				pf_count(cpu, offsetof(struct pf_stats, alloc_failed));
				continue;
			}
			if (pf_fill_drop(msg, r)) {
				nlmsg_free(msg);
				pf_count(cpu, offsetof(struct pf_stats, alloc_failed));
				continue;
			}
			err = genlmsg_multicast(&pf_family, msg, 0,
						PF_MCGRP_EVENTS, GFP_KERNEL);
			if (err)
				pf_count(cpu, offsetof(struct pf_stats, send_failed));
			else
				pf_count(cpu, offsetof(struct pf_stats, reported));
			cond_resched();
		}
	}
	kfree(r);
}

static void pf_clear_table(void)
{
	unsigned int i;

	for (i = 0; i < PF_TABLE_SIZE; i++)
		WRITE_ONCE(pf_table[i].skb, 0UL);
}

static int pf_cmd_enable(struct sk_buff *skb, struct genl_info *info)
{
	u32 rate = PF_DEFAULT_RATE, burst = PF_DEFAULT_BURST;

	if (info->attrs[PKTFATE_ATTR_RATE])
		rate = nla_get_u32(info->attrs[PKTFATE_ATTR_RATE]);
	if (info->attrs[PKTFATE_ATTR_BURST])
		burst = nla_get_u32(info->attrs[PKTFATE_ATTR_BURST]);

	mutex_lock(&pf_cmd_lock);
	WRITE_ONCE(pf_rate, rate);
	WRITE_ONCE(pf_burst, burst);
	if (!pf_enabled) {
		pf_clear_table();
		WRITE_ONCE(pf_enabled, true);
	}
	mutex_unlock(&pf_cmd_lock);
	return 0;
}

static int pf_cmd_disable(struct sk_buff *skb, struct genl_info *info)
{
	mutex_lock(&pf_cmd_lock);
	if (pf_enabled) {
		WRITE_ONCE(pf_enabled, false);
		/* Hooks and probes that saw it enabled are done after this. */
		synchronize_net();
		pf_clear_table();
	}
	mutex_unlock(&pf_cmd_lock);
	return 0;
}

static int pf_cmd_set_filter(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct pf_filter *f, *old;

	if (a[PKTFATE_ATTR_FILTER_MARK] && !a[PKTFATE_ATTR_FILTER_MARK_MASK]) {
		NL_SET_ERR_MSG_MOD(info->extack, "FILTER_MARK needs FILTER_MARK_MASK");
		return -EINVAL;
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL);
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
	old = rcu_replace_pointer(pf_filter, f, lockdep_is_held(&pf_cmd_lock));
	mutex_unlock(&pf_cmd_lock);
	kfree_rcu(old, rcu);
	return 0;
}

static void pf_sum_stats(struct pf_stats *sum)
{
	int cpu;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		struct pf_cpu *c = per_cpu_ptr(pf_cpus, cpu);
		unsigned long flags;

		spin_lock_irqsave(&c->lock, flags);
		sum->seen += c->stats.seen;
		sum->reported += c->stats.reported;
		sum->rate_limited += c->stats.rate_limited;
		sum->queue_full += c->stats.queue_full;
		sum->alloc_failed += c->stats.alloc_failed;
		sum->send_failed += c->stats.send_failed;
		sum->table_full += c->stats.table_full;
		spin_unlock_irqrestore(&c->lock, flags);
	}
}

static int pf_fill_stats(struct sk_buff *msg, struct genl_info *info)
{
	const struct pf_filter *f;
	struct pf_filter filter;
	struct pf_stats st;
	void *hdr;

	pf_sum_stats(&st);
	rcu_read_lock();
	f = rcu_dereference(pf_filter);
	filter = *f;
	rcu_read_unlock();

	hdr = genlmsg_put_reply(msg, info, &pf_family, 0, PKTFATE_CMD_GET_STATS);
	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_u8(msg, PKTFATE_ATTR_ENABLED, READ_ONCE(pf_enabled)) ||
	    nla_put_u32(msg, PKTFATE_ATTR_RATE, READ_ONCE(pf_rate)) ||
	    nla_put_u32(msg, PKTFATE_ATTR_BURST, READ_ONCE(pf_burst)) ||
	    nla_put_u32(msg, PKTFATE_ATTR_QUEUE_LEN, queue_len) ||
	    nla_put_u32(msg, PKTFATE_ATTR_FILTER_NETNS, filter.netns) ||
	    nla_put_u32(msg, PKTFATE_ATTR_FILTER_MARK, filter.mark) ||
	    nla_put_u32(msg, PKTFATE_ATTR_FILTER_MARK_MASK, filter.mark_mask) ||
	    nla_put_u32(msg, PKTFATE_ATTR_FILTER_FAMILIES, filter.families) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_SEEN, st.seen,
			      PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_REPORTED, st.reported,
			      PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_RATE_LIMITED,
			      st.rate_limited, PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_QUEUE_FULL, st.queue_full,
			      PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_ALLOC_FAILED,
			      st.alloc_failed, PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_SEND_FAILED,
			      st.send_failed, PKTFATE_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, PKTFATE_ATTR_STAT_TABLE_FULL, st.table_full,
			      PKTFATE_ATTR_PAD))
		goto nla_put_failure;
	genlmsg_end(msg, hdr);
	return 0;

nla_put_failure:
	genlmsg_cancel(msg, hdr);
	return -EMSGSIZE;
}

static int pf_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	int err;

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	err = pf_fill_stats(msg, info);
	if (err) {
		NL_SET_ERR_MSG_MOD(info->extack, "statistics do not fit a message");
		goto free_msg;
	}
	return genlmsg_reply(msg, info);

free_msg:
	nlmsg_free(msg);
	return err;
}

static struct netlink_range_validation pf_burst_range = {
	.min = 1,
	.max = PF_MAX_BURST,
};

static const struct nla_policy pf_enable_policy[PKTFATE_ATTR_MAX + 1] = {
	[PKTFATE_ATTR_RATE] = { .type = NLA_U32 },
	[PKTFATE_ATTR_BURST] = NLA_POLICY_FULL_RANGE(NLA_U32, &pf_burst_range),
};

static const struct nla_policy pf_filter_policy[PKTFATE_ATTR_MAX + 1] = {
	[PKTFATE_ATTR_FILTER_NETNS] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_MARK] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_MARK_MASK] = { .type = NLA_U32 },
	[PKTFATE_ATTR_FILTER_FAMILIES] =
		NLA_POLICY_MASK(NLA_U32, PKTFATE_FAMILY_ALL),
};

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

#define PF_HOOK(_pf, _hook, _fn, _prio) {	\
	.hook = _fn,				\
	.pf = _pf,				\
	.hooknum = _hook,			\
	.priority = _prio,			\
}

#define PF_HOOKS(_pf, _hook)					\
	PF_HOOK(_pf, _hook, pf_hook_enter, NF_IP_PRI_FIRST),	\
	PF_HOOK(_pf, _hook, pf_hook_exit, NF_IP_PRI_LAST)

/*
 * nf_register_net_hook accepts every int priority (nf_hook_entries_grow
 * only orders by it), so the first and last usable ones are INT_MIN and
 * INT_MAX themselves. A new entry goes before the existing ones of equal
 * priority: our INT_MIN entry runs first unless an INT_MIN hook is
 * registered after us (none in tree), and hooks registered at INT_MAX after
 * us (conntrack's confirm, which registers in a namespace when a ruleset
 * first needs conntrack) run before our exit, so drops there are seen;
 * only INT_MAX hooks that were there before the module run after it.
 */
static const struct nf_hook_ops pf_nf_ops[] = {
	PF_HOOKS(NFPROTO_IPV4, NF_INET_PRE_ROUTING),
	PF_HOOKS(NFPROTO_IPV4, NF_INET_LOCAL_IN),
	PF_HOOKS(NFPROTO_IPV4, NF_INET_FORWARD),
	PF_HOOKS(NFPROTO_IPV4, NF_INET_LOCAL_OUT),
	PF_HOOKS(NFPROTO_IPV4, NF_INET_POST_ROUTING),
	PF_HOOKS(NFPROTO_IPV6, NF_INET_PRE_ROUTING),
	PF_HOOKS(NFPROTO_IPV6, NF_INET_LOCAL_IN),
	PF_HOOKS(NFPROTO_IPV6, NF_INET_FORWARD),
	PF_HOOKS(NFPROTO_IPV6, NF_INET_LOCAL_OUT),
	PF_HOOKS(NFPROTO_IPV6, NF_INET_POST_ROUTING),
};

static int __net_init pf_net_init(struct net *net)
{
	return nf_register_net_hooks(net, pf_nf_ops, ARRAY_SIZE(pf_nf_ops));
}

static void __net_exit pf_net_exit(struct net *net)
{
	nf_unregister_net_hooks(net, pf_nf_ops, ARRAY_SIZE(pf_nf_ops));
}

static struct pernet_operations pf_net_ops = {
	.init = pf_net_init,
	.exit = pf_net_exit,
};

static void pf_free_cpus(void)
{
	int cpu;

	for_each_possible_cpu(cpu)
		kvfree(per_cpu_ptr(pf_cpus, cpu)->ring);
	free_percpu(pf_cpus);
}

static int __init pf_alloc_cpus(void)
{
	int cpu;

	pf_cpus = alloc_percpu(struct pf_cpu);
	if (!pf_cpus)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct pf_cpu *c = per_cpu_ptr(pf_cpus, cpu);

		spin_lock_init(&c->lock);
		c->ring = kvcalloc(queue_len, sizeof(*c->ring), GFP_KERNEL);
		if (!c->ring)
			goto free_cpus;
	}
	return 0;

free_cpus:
	pf_free_cpus();
	return -ENOMEM;
}

static int __init pf_init(void)
{
	struct pf_filter *f;
	int err;

	if (!queue_len || queue_len > 4096) {
		pr_err("queue_len must be 1..4096\n");
		return -EINVAL;
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	RCU_INIT_POINTER(pf_filter, f);

	err = pf_alloc_cpus();
	if (err)
		goto free_filter;
	err = genl_register_family(&pf_family);
	if (err)
		goto free_cpus;
	err = register_pernet_subsys(&pf_net_ops);
	if (err)
		goto unregister_family;
	err = register_trace_kfree_skb(pf_kfree_skb, NULL);
	if (err)
		goto unregister_pernet;
	return 0;

unregister_pernet:
	unregister_pernet_subsys(&pf_net_ops);
unregister_family:
	genl_unregister_family(&pf_family);
free_cpus:
	pf_free_cpus();
free_filter:
	kfree(f);
	return err;
}

static void __exit pf_exit(void)
{
	WRITE_ONCE(pf_enabled, false);
	/* No probe runs after this, so nothing schedules the work again. */
	unregister_trace_kfree_skb(pf_kfree_skb, NULL);
	tracepoint_synchronize_unregister();
	/* Unregisters the hooks of every namespace and waits for them. */
	unregister_pernet_subsys(&pf_net_ops);
	cancel_work_sync(&pf_work);
	genl_unregister_family(&pf_family);
	pf_free_cpus();
	/* Filters replaced by SET_FILTER are freed after a grace period. */
	rcu_barrier();
	kfree(rcu_dereference_protected(pf_filter, 1));
}

module_init(pf_init);
module_exit(pf_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pktfate");
MODULE_DESCRIPTION("Report packets dropped inside netfilter hook chains");
MODULE_ALIAS_GENL_FAMILY(PKTFATE_GENL_NAME);
