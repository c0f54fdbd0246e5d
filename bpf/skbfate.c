// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * skbfate: report every sk_buff the kernel frees.
 *
 * tp_btf/kfree_skb fires when a packet is dropped (with the kernel's drop
 * reason and the caller's address), tp_btf/consume_skb when it is freed
 * after normal processing. Each event goes into one ring buffer; every
 * failed reservation is counted per CPU so user space can report it.
 */
#include "vmlinux_min.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Largest snap length the record can hold; user space picks up to this. */
#define SNAP_MAX 256

enum event_kind {
	KIND_KFREE = 0,
	KIND_CONSUME = 1,
};

enum event_flags {
	/* data[] starts at the network header. */
	EVF_NETWORK = 1 << 0,
	/* data[] starts at the MAC header (no network header was set). */
	EVF_MAC = 1 << 1,
	/* The probe had a location argument (consume_skb before 6.3 has none). */
	EVF_HAS_LOCATION = 1 << 2,
	/* Freed inside a netfilter hook's chain: nf_hook and nf_pf are valid. */
	EVF_NF = 1 << 3,
	/* The skb had a MAC header (drop_monitor skips packets without one). */
	EVF_MAC_SET = 1 << 4,
};

enum counter {
	CNT_RINGBUF_FULL = 0,
	CNT_SUBMITTED = 1,
	/* Packets whose entry into a netfilter hook could not be recorded. */
	CNT_NF_INFLIGHT_FULL = 2,
	CNT_MAX,
};

struct event {
	__u64 ts;	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 skb;	/* sk_buff address */
	__u64 location;	/* caller of kfree_skb/consume_skb */
	__u32 reason;	/* raw enum skb_drop_reason (0 for consume) */
	__u32 netns;	/* inode of the device's (or socket's) netns */
	__u32 ifindex;
	__u32 mark;
	__u32 len;	/* skb->len */
	__u32 cpu;
	__u16 protocol;	/* skb->protocol, network byte order */
	__u16 cap_len;	/* bytes valid in data[] */
	__u8 kind;	/* enum event_kind */
	__u8 flags;	/* enum event_flags */
	__u8 nf_hook;	/* enum nf_inet_hooks, with EVF_NF */
	__u8 nf_pf;	/* NFPROTO_*, with EVF_NF */
	char ifname[16];
	__u8 data[SNAP_MAX];
};

/* Load-time configuration, set by user space before loading. */
const volatile __u32 snap_len = 128;
const volatile __u32 filter_netns = 0;
const volatile __u32 filter_ifindex = 0;
const volatile __u32 filter_mark = 0;
const volatile __u32 filter_mark_mask = 0;
/* Netfilter hook attribution is on: kfree_skb consults the inflight map. */
const volatile bool nf_enabled = false;
/*
 * Wake the reader after every wakeup_every events on a CPU (a power of
 * two); in between, the reader polls. Asking the ring how much data waits
 * (bpf_ringbuf_query) would touch the consumer's cache line on every event
 * and cost several hundred nanoseconds; a per-CPU counter costs nothing.
 */
const volatile __u64 wakeup_every = 2048;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * Packets inside a netfilter hook's chain, per CPU: nf_enter (first
 * priority) pushes the skb, nf_exit (last priority) takes it off again. An
 * skb that kfree_skb sees while it is there was dropped (or stolen) inside
 * that hook. A hook's chain runs on one CPU; hooks nest (a REJECT sends its
 * reply through LOCAL_OUT from inside LOCAL_IN), hence a small stack. A
 * per-CPU array costs a few stores where a hash map update and delete cost
 * several hundred nanoseconds per hook. Entries older than NF_STALE
 * jiffies are ignored: a task preempted and migrated inside a chain
 * (process context only) leaves one behind, and its skb address will be
 * reused. A chain can take milliseconds when a REJECT sends its reply or
 * when a virtual CPU is descheduled: 1 ms was too short under QEMU TCG.
 * 250 jiffies is 1 s at Debian's HZ=250 (like the module's table), 0.25 s
 * at HZ=1000, 2.5 s at HZ=100. The age is kept in jiffies, not
 * nanoseconds, because bpf_jiffies64() is one load (the verifier inlines
 * it) where bpf_ktime_get_ns() reads the TSC: in a VM that was half of
 * nf_enter's cost, paid on every packet in every hook.
 */
#define NF_STACK 8
#define NF_STALE 250

struct nf_inflight {
	__u64 skb;
	__u64 jiffies;	/* when it entered the chain */
	__u8 hook;
	__u8 pf;
	__u8 pad[6];
};

struct nf_stack {
	struct nf_inflight e[NF_STACK];
	__u32 top; /* entries pushed minus entries popped, wraps */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_stack);
} inflight SEC(".maps");

static __always_inline struct nf_stack *nf_stack(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&inflight, &zero);
}

/*
 * nf_take finds skb on this CPU's stack, clears it and returns its entry's
 * hook and family; pops cleared entries off the top.
 */
static __always_inline bool nf_take(struct nf_stack *st, __u64 skb, __u64 jiffies,
				    __u8 *hook, __u8 *pf)
{
	bool found = false;
	__u32 k;

#pragma unroll
	for (k = 0; k < NF_STACK; k++) {
		struct nf_inflight *e = &st->e[(st->top - 1 - k) & (NF_STACK - 1)];

		if (e->skb != skb)
			continue;
		e->skb = 0;
		if (jiffies - e->jiffies < NF_STALE) {
			*hook = e->hook;
			*pf = e->pf;
			found = true;
		}
		break;
	}
#pragma unroll
	for (k = 0; k < NF_STACK; k++) {
		if (st->top == 0 || st->e[(st->top - 1) & (NF_STACK - 1)].skb)
			break;
		st->top--;
	}
	return found;
}

/* Force the generated Go type: bpf2go -type event. */
const struct event *unused_event __attribute__((unused));

static __always_inline __u64 count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (!v)
		return 0;
	*v += 1;
	return *v;
}

/*
 * tp_btf arguments are typed kernel pointers: plain member accesses compile
 * to CO-RE-relocated loads that the JIT guards against faults, much cheaper
 * than one bpf_probe_read_kernel() call per member.
 */
static __always_inline __u32 skb_netns(struct sk_buff *skb, struct net_device *dev)
{
	struct sock *sk;

	if (dev)
		return dev->nd_net.net->ns.inum;
	sk = skb->sk;
	if (sk)
		return sk->__sk_common.skc_net.net->ns.inum;
	return 0;
}

static __always_inline int emit(struct sk_buff *skb, __u64 location,
				__u32 reason, __u8 kind, __u8 flags)
{
	struct net_device *dev = skb->dev;
	__u32 netns = skb_netns(skb, dev);
	__u32 ifindex;
	__u32 mark = skb->mark;
	__u32 snap = snap_len;
	struct event *ev;
	unsigned char *head;
	__u16 nh, mh;
	__u32 off, tail, n;
	__u8 nf_hook = 0, nf_pf = 0;

	ifindex = dev ? dev->ifindex : skb->skb_iif;

	/*
	 * Whatever happens to the event, a freed skb leaves inflight: its
	 * address will be reused by another packet.
	 */
	if (nf_enabled) {
		struct nf_stack *st = nf_stack();

		if (st && st->top && nf_take(st, (__u64)skb, bpf_jiffies64(), &nf_hook, &nf_pf))
			flags |= EVF_NF;
	}

	if (filter_netns && netns != filter_netns)
		return 0;
	if (filter_ifindex && ifindex != filter_ifindex)
		return 0;
	if (filter_mark_mask && (mark & filter_mark_mask) != filter_mark)
		return 0;

	if (snap > SNAP_MAX)
		snap = SNAP_MAX;
	/* The reserved size is a constant: snap_len lives in frozen .rodata. */
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev) - SNAP_MAX + snap, 0);
	if (!ev) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}

	ev->ts = bpf_ktime_get_ns();
	ev->skb = (__u64)skb;
	ev->location = location;
	ev->reason = reason;
	ev->netns = netns;
	ev->ifindex = ifindex;
	ev->mark = mark;
	ev->len = skb->len;
	ev->cpu = bpf_get_smp_processor_id();
	ev->protocol = skb->protocol;
	ev->kind = kind;
	ev->nf_hook = nf_hook;
	ev->nf_pf = nf_pf;
	/*
	 * The name as two direct 8-byte loads (IFNAMSIZ is 16; user space
	 * reads up to the NUL): a fraction of a probe-read helper call.
	 */
	if (dev) {
		__u64 *name = (__u64 *)dev->name;

		((__u64 *)ev->ifname)[0] = name[0];
		((__u64 *)ev->ifname)[1] = name[1];
	} else {
		((__u64 *)ev->ifname)[0] = 0;
		((__u64 *)ev->ifname)[1] = 0;
	}

	head = skb->head;
	nh = skb->network_header;
	mh = skb->mac_header;
	tail = skb->tail;
	if (mh != (__u16)~0U)
		flags |= EVF_MAC_SET;
	if (nh != (__u16)~0U) {
		off = nh;
		flags |= EVF_NETWORK;
	} else if (mh != (__u16)~0U) {
		off = mh;
		flags |= EVF_MAC;
	} else {
		off = skb->data - head;
	}
	n = 0;
	if (tail > off)
		n = tail - off;
	if (n > snap)
		n = snap;
	/* Keep the bound visible to the verifier whatever clang does above. */
	asm volatile("%[n] &= 0x1ff" : [n] "+r"(n));
	if (n > SNAP_MAX)
		n = 0;
	if (n && bpf_probe_read_kernel(ev->data, n, head + off))
		n = 0;
	ev->cap_len = n;
	ev->flags = flags;

	bpf_ringbuf_submit(ev, (count(CNT_SUBMITTED) & (wakeup_every - 1)) ?
			       BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	return emit(skb, (__u64)location, reason, KIND_KFREE, EVF_HAS_LOCATION);
}

/* consume_skb with its location argument (kernel 6.3 and later). */
SEC("tp_btf/consume_skb")
int BPF_PROG(consume_skb, struct sk_buff *skb, void *location)
{
	return emit(skb, (__u64)location, 0, KIND_CONSUME, EVF_HAS_LOCATION);
}

/* consume_skb before 6.3: the tracepoint has the skb only. */
SEC("tp_btf/consume_skb")
int BPF_PROG(consume_skb_noloc, struct sk_buff *skb)
{
	return emit(skb, 0, 0, KIND_CONSUME, 0);
}

static __always_inline bool nf_wanted(const struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	const struct nf_hook_state *state = ctx->state;
	struct net_device *dev;

	if (filter_mark_mask && (skb->mark & filter_mark_mask) != filter_mark)
		return false;
	if (filter_ifindex) {
		dev = state->in ? state->in : state->out;
		if (!dev || dev->ifindex != filter_ifindex)
			return false;
	}
	return true;
}

static __always_inline void nf_record(struct sk_buff *skb, const struct nf_hook_state *state)
{
	struct nf_stack *st = nf_stack();
	struct nf_inflight *e;
	__u64 now;

	if (!st)
		return;
	e = &st->e[st->top & (NF_STACK - 1)];
	now = bpf_jiffies64();
	/* Nested deeper than NF_STACK: a live entry is lost, and counted. */
	if (e->skb && now - e->jiffies < NF_STALE)
		count(CNT_NF_INFLIGHT_FULL);
	e->skb = (__u64)skb;
	e->jiffies = now;
	e->hook = state->hook;
	e->pf = state->pf;
	st->top++;
}

static __always_inline void nf_forget(struct sk_buff *skb)
{
	struct nf_stack *st = nf_stack();
	__u8 hook, pf;

	if (st && st->top)
		nf_take(st, (__u64)skb, 0, &hook, &pf);
}

/* First priority of a hook: the packet enters the hook's chain. */
SEC("netfilter")
int nf_enter(struct bpf_nf_ctx *ctx)
{
	if (nf_wanted(ctx))
		nf_record(ctx->skb, ctx->state);
	return NF_ACCEPT;
}

/* Last priority of a hook: every rule accepted the packet. */
SEC("netfilter")
int nf_exit(struct bpf_nf_ctx *ctx)
{
	nf_forget(ctx->skb);
	return NF_ACCEPT;
}

/*
 * Kernels without BPF netfilter programs (before 6.4) but with fentry:
 * nf_hook_slow() runs one hook's chain, so entering and leaving it brackets
 * the chain exactly like nf_enter/nf_exit. It runs for every network
 * namespace, so the netns filter applies here.
 */
SEC("fentry/nf_hook_slow")
int BPF_PROG(nf_hook_slow_enter, struct sk_buff *skb, const struct nf_hook_state *state)
{
	struct net_device *dev;

	if (filter_netns && state->net->ns.inum != filter_netns)
		return 0;
	if (filter_mark_mask && (skb->mark & filter_mark_mask) != filter_mark)
		return 0;
	if (filter_ifindex) {
		dev = state->in ? state->in : state->out;
		if (!dev || dev->ifindex != filter_ifindex)
			return 0;
	}
	nf_record(skb, state);
	return 0;
}

SEC("fexit/nf_hook_slow")
int BPF_PROG(nf_hook_slow_exit, struct sk_buff *skb)
{
	nf_forget(skb);
	return 0;
}
