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
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Largest snap length the record can hold; user space picks up to this. */
#define SNAP_MAX 256

enum event_kind {
	KIND_KFREE = 0,
	KIND_CONSUME = 1,
	/* A socket copied the packet to user space (skb_copy_datagram_iovec). */
	KIND_READ = 2,
	/* Freed by skb_attempt_defer_free on its own CPU: no tracepoint. */
	KIND_DEFER = 3,
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
	/* skb->cloned: the data buffer is (or was) shared with another skb. */
	EVF_CLONED = 1 << 5,
	/*
	 * After this free the data buffer is still referenced by another skb
	 * (skb_shinfo(skb)->dataref counted more than this one): a copy was
	 * released, the packet itself lives on.
	 */
	EVF_SHARED = 1 << 6,
	/* Not a network packet (no protocol, no MAC header): netlink, unix... */
	EVF_NOT_PACKET = 1 << 7,
	/* The pcap-filter expression ran in the kernel and matched. */
	EVF_FILTERED = 1 << 8,
	/*
	 * A SYN the listener refused: tcp_conn_request() counted a listen
	 * drop on the socket while it handled this skb (accept queue or SYN
	 * queue full), and the consume that follows is its free.
	 */
	EVF_LISTEN_DROP = 1 << 9,
};

/* Where netns and ifindex were taken from (netns_from, if_from). */
enum where_from {
	FROM_NONE = 0,
	/* skb->dev, which held a device. */
	FROM_DEV = 1,
	/* skb->sk, the socket owning the skb. */
	FROM_SK = 2,
	/* kfree_skb's rx_sk, the receiving socket that dropped it (6.11+). */
	FROM_RX_SK = 3,
	/* The current task: the one reading the packet from its socket. */
	FROM_TASK = 4,
	/*
	 * skb->skb_iif, the interface it arrived on (the device pointer is
	 * gone); for netns: nothing in the skb names it, and --filter-netns
	 * kept it because that namespace has an interface of this index.
	 */
	FROM_IIF = 5,
};

enum counter {
	CNT_RINGBUF_FULL = 0,
	CNT_SUBMITTED = 1,
	/* Packets whose entry into a netfilter hook could not be recorded. */
	CNT_NF_INFLIGHT_FULL = 2,
	/* skbs that are not network packets, not shown (show_non_packets off); with a pcap filter, those it kept. */
	CNT_NOT_PACKET = 3,
	/* Packets a netfilter hook stole or queued (they left without nf_exit). */
	CNT_NF_STOLEN = 4,
	/* Frees of a packet already reported at its read: one delivery. */
	CNT_FREED_AFTER_READ = 5,
	/*
	 * Packets the pcap filter could not judge: none of their bytes could
	 * be read (headers not in the linear data). Lost: whether they match
	 * is not known.
	 */
	CNT_FILTER_NO_BYTES = 6,
	/*
	 * In-flight entries found older than NF_STALE and let go: a packet
	 * stolen long ago, or a chain that finished on another CPU after its
	 * task migrated; one freed with such an entry is not attributed.
	 */
	CNT_NF_STALE = 7,
	CNT_MAX,
};

struct event {
	__u64 ts;	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 skb;	/* sk_buff address */
	__u64 location;	/* caller of kfree_skb/consume_skb */
	__u64 head;	/* skb->head: the data buffer, shared by clones */
	__u32 reason;	/* raw enum skb_drop_reason (0 for consume) */
	__u32 netns;	/* inode of the netns (see netns_from) */
	__u32 ifindex;	/* see if_from */
	__u32 iif;	/* skb->skb_iif: the interface it arrived on, 0 if sent here */
	__u32 mark;
	__u32 len;	/* skb->len */
	__u32 cpu;
	__u16 protocol;	/* skb->protocol, network byte order */
	__u16 cap_len;	/* bytes valid in data[] */
	__u16 flags;	/* enum event_flags */
	__u8 kind;	/* enum event_kind */
	__u8 nf_hook;	/* hook number of nf_pf's family, with EVF_NF */
	__u8 nf_pf;	/* NFPROTO_*, with EVF_NF */
	__u8 sk_family;	/* AF_* of the socket owning the skb (skb->sk or rx_sk), 0 if none */
	__u8 netns_from; /* enum where_from */
	__u8 if_from;	/* enum where_from */
	char ifname[16];
	__u8 data[SNAP_MAX];
};

/* Load-time configuration, set by user space before loading. */
const volatile __u32 snap_len = 128;
/* The placeholders above hold the user's pcap-filter expression. */
const volatile bool filter_pcap = false;
/*
 * The network namespaces kept (inodes): the first filter_netns_n entries
 * of filter_netns; none keeps all.
 */
#define FILTER_NETNS_MAX 8
const volatile __u32 filter_netns_n = 0;
const volatile __u32 filter_netns[FILTER_NETNS_MAX] = {};
const volatile __u32 filter_ifindex = 0;
const volatile __u32 filter_mark = 0;
const volatile __u32 filter_mark_mask = 0;
/* Netfilter hook attribution is on: kfree_skb consults the inflight map. */
const volatile bool nf_enabled = false;
/* Report skbs that are not network packets too (counted otherwise). */
const volatile bool show_non_packets = false;
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
 * The interface indexes of filter_netns's namespaces, filled by user
 * space: an skb whose namespace nothing in it names (a datagram queued on
 * a UDP socket, a fragment in a reassembly queue) passes the netns filter
 * when the interface it arrived on (skb_iif) is one of them. The value is
 * the namespace's inode, 0 when several of them have an interface of that
 * index.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} filter_netns_ifindexes SEC(".maps");

/* Whether netns is one of the namespaces kept (filter_netns_n > 0). */
static __always_inline bool netns_kept(__u32 netns)
{
	for (int i = 0; i < FILTER_NETNS_MAX; i++) {
		if (i >= filter_netns_n)
			break;
		if (filter_netns[i] == netns)
			return true;
	}
	return false;
}

/*
 * Per-CPU scratch: the last skb a socket read on this CPU; the SYN a
 * listener handles (tcp_conn_request, with the socket's drop count at its
 * entry) and the last one it refused.
 */
struct cpu_state {
	__u64 read_skb;
	__u64 read_head;
	__u64 scratch;
	__u64 syn_skb;
	__u64 refused_skb;
	__s32 syn_drops;
	__u32 refused_netns; /* the listener's namespace */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_states SEC(".maps");

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
 *
 * A hook that steals a packet (conntrack's defragmentation queues
 * fragments, NFQUEUE) ends the chain before nf_exit: its entry would stay
 * and fill the stack. Each entry keeps where its chain runs: the address
 * of the hook's nf_hook_state, which lives in nf_hook()'s stack frame, and
 * which stack that is (the task's, or 0 for this CPU's interrupt stack).
 * A chain that is still running has only deeper frames below it: a new
 * chain on the same stack from a frame no deeper than the entry's proves
 * that the entry's chain has returned. (The state's address, not the
 * program's own stack: tracing programs may run on a private stack.)
 */
#define NF_STACK 8
#define NF_STALE 250
/*
 * How deep the stack may go: NF_STACK, less only in tests
 * (PKTFATE_TEST_NF_DEPTH), which drive nf_inflight_full with the nesting
 * a REJECT makes, where eight deep needs tunnels in tunnels.
 */
const volatile __u32 nf_depth = NF_STACK;
/* x86-64's THREAD_SIZE without KASAN (Debian's kernels). */
#define TASK_STACK_SIZE (16 << 10)

struct nf_inflight {
	__u64 skb;
	__u64 jiffies;	/* when it entered the chain */
	__u64 frame;	/* address of the chain's nf_hook_state */
	__u64 stack;	/* base of the task stack it is on, 0: interrupt stack */
	__u8 hook;
	__u8 pf;
	__u8 pad[6];
};

struct nf_stack {
	struct nf_inflight e[NF_STACK];
	__u32 top; /* entries pushed minus entries popped, wraps */
	__u32 pad;
	__u64 scratch;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_stack);
} inflight SEC(".maps");

static __always_inline __u64 count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (!v)
		return 0;
	*v += 1;
	return *v;
}

static __always_inline struct nf_stack *nf_stack(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&inflight, &zero);
}

/*
 * as_number returns a kernel address as a plain number: stored in a map
 * value and loaded back, a pointer is a scalar the program may compare.
 */
static __always_inline __u64 as_number(__u64 *slot, const void *p)
{
	*(volatile __u64 *)slot = (__u64)p;
	return *(volatile __u64 *)slot;
}

/* The stack the program runs on: the current task's, or 0 (interrupt). */
static __always_inline __u64 stack_of(__u64 addr)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 base = (__u64)t->stack;

	return addr - base < TASK_STACK_SIZE ? base : 0;
}

/*
 * nf_take finds skb on this CPU's stack, clears it and returns its entry's
 * hook and family; pops cleared entries off the top. jiffies is now, for
 * a free (an entry older than NF_STALE is not the packet's chain: counted
 * stale); 0 for a chain's own exit, which is never stale (it returned).
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
		if (!jiffies || jiffies - e->jiffies < NF_STALE) {
			*hook = e->hook;
			*pf = e->pf;
			found = true;
		} else {
			count(CNT_NF_STALE);
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

static __always_inline struct cpu_state *cpu_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_states, &zero);
}

/*
 * skb_device returns skb->dev where the skb's state says it holds a
 * device, else NULL. The field shares a union with dev_scratch and rbnode
 * (include/linux/skbuff.h):
 *  - while a datagram waits on a UDP socket, and after, it is UDP's scratch
 *    (truesize, length, two flags: udp_set_dev_scratch()), never an address
 *    in the kernel's half;
 *  - in a reassembly queue (and TCP's out-of-order queue) it is rbnode's
 *    left child, and the first word rbnode's parent and colour: the colour
 *    bit set (a black node) or the node itself (RB_CLEAR_NODE, a fragment
 *    appended to a run) says the skb is or was in a tree;
 *  - TCP sets it to NULL once a socket has the segment.
 * A red node of TCP's out-of-order tree passes those tests with a child
 * skb in place of the device. A net_device starts with its name (ASCII,
 * NUL-padded), an sk_buff with a pointer (the kernel's half: top byte
 * 0xff): the first word tells them apart. (Comparing with the interface
 * the skb arrived on, as before, took every bridged or forwarded packet
 * that still carries its sender's socket for one whose device is gone.)
 * Following anything else costs an exception-table fixup per load
 * (several microseconds) and reads garbage.
 */
static __always_inline struct net_device *skb_device(struct sk_buff *skb, __u64 *slot)
{
	/*
	 * The verifier types a load at these offsets as the unions' first
	 * members (pointers, which may not be masked or shifted): make them
	 * numbers first.
	 */
	__u64 raw = as_number(slot, skb->dev);
	__u64 rb = as_number(slot, skb->next);
	struct net_device *dev;

	if ((raw >> 56) != 0xff)
		return NULL;
	if (rb & 1)
		return NULL;
	if (skb->next == skb)
		return NULL;
	dev = skb->dev;
	if ((((__u64 *)dev->name)[0] >> 56) == 0xff)
		return NULL;
	return dev;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* The trailing pcap-filter expression, run before the ring reserve. */
#include "pktfate_filter.h"

/*
 * tp_btf arguments are typed kernel pointers: plain member accesses compile
 * to CO-RE-relocated loads that the JIT guards against faults, much cheaper
 * than one bpf_probe_read_kernel() call per member (as long as they do not
 * fault: see skb_device).
 */
static __always_inline int emit(struct sk_buff *skb, __u64 location, __u32 reason,
				__u8 kind, __u16 flags, struct sock *rx_sk)
{
	struct sock *sk = skb->sk;
	__u32 iif = skb->skb_iif;
	struct net_device *dev;
	struct cpu_state *c;
	__u32 netns = 0, ifindex = 0;
	__u8 netns_from = FROM_NONE, if_from = FROM_NONE, sk_family = 0;
	__u32 mark = skb->mark;
	__u16 protocol = skb->protocol;
	__u32 snap = snap_len;
	struct event *ev;
	unsigned char *head;
	__u16 nh, mh;
	__u32 off, tail, n;
	__u8 nf_hook = 0, nf_pf = 0;
	__u32 listen_netns = 0;
	bool unjudged = false;

	c = cpu_state();
	if (!c)
		return 0;
	/*
	 * The free of a packet a socket just read on this CPU: the read
	 * reported the delivery already (it is the sighting that survives
	 * skb_attempt_defer_free), so the free is counted, not reported again.
	 */
	if ((kind == KIND_CONSUME || kind == KIND_DEFER) &&
	    c->read_skb == as_number(&c->scratch, skb) &&
	    c->read_head == (__u64)skb->head) {
		c->read_skb = 0;
		count(CNT_FREED_AFTER_READ);
		return 0;
	}
	if (kind == KIND_CONSUME && c->refused_skb == as_number(&c->scratch, skb)) {
		c->refused_skb = 0;
		flags |= EVF_LISTEN_DROP;
		listen_netns = c->refused_netns;
	}
	/*
	 * Whatever happens to the event, a freed skb leaves inflight: its
	 * address will be reused by another packet.
	 */
	if (nf_enabled && kind != KIND_READ) {
		struct nf_stack *st = nf_stack();

		if (st && st->top && nf_take(st, (__u64)skb, bpf_jiffies64(), &nf_hook, &nf_pf))
			flags |= EVF_NF;
	}

	/*
	 * The pcap filter first: it needs only the skb's own fields and
	 * bytes, while the namespace and the device are chains of loads
	 * (skb->dev->nd_net.net->ns), which a packet the expression rejects
	 * should not pay for.
	 */
	head = skb->head;
	mh = skb->mac_header;
	if (snap > SNAP_MAX)
		snap = SNAP_MAX;
	nh = skb->network_header;
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
	/*
	 * The expression sees what user space would: the captured bytes, from
	 * the network header (or the MAC header when there is none).
	 */
	if (filter_pcap) {
		__u64 data = (__u64)head + off;
		__u32 proto = bpf_ntohs(protocol);
		int match;

		/*
		 * Bytes that cannot be judged are a loss only for a packet
		 * the other filters keep: counted below, after them.
		 */
		if (!n && skb->len) {
			unjudged = true;
		} else {
			if (flags & EVF_MAC)
				match = pktfate_filter_l2(data, n, proto, n);
			else
				match = pktfate_filter_l3(data, n, proto, n);
			if (!match)
				return 0;
			flags |= EVF_FILTERED;
		}
	}
	dev = skb_device(skb, &c->scratch);
	if (rx_sk) {
		netns = sk_netns(rx_sk);
		netns_from = FROM_RX_SK;
		sk_family = rx_sk->__sk_common.skc_family;
	} else if (dev) {
		netns = dev->nd_net.net->ns.inum;
		netns_from = FROM_DEV;
	} else if (sk) {
		netns = sk_netns(sk);
		netns_from = FROM_SK;
	} else if (listen_netns) {
		/* A refused SYN: the skb names nothing, the listener does. */
		netns = listen_netns;
		netns_from = FROM_SK;
	} else if (kind == KIND_READ) {
		struct task_struct *t = bpf_get_current_task_btf();
		struct nsproxy *nsp = t->nsproxy;

		if (nsp) {
			netns = nsp->net_ns->ns.inum;
			netns_from = FROM_TASK;
		}
	}
	if (sk && !sk_family)
		sk_family = sk->__sk_common.skc_family;
	if (dev) {
		ifindex = dev->ifindex;
		if_from = FROM_DEV;
	} else if (iif) {
		ifindex = iif;
		if_from = FROM_IIF;
	}

	if (filter_netns_n && !netns_kept(netns)) {
		__u32 *in;

		if (netns_from != FROM_NONE || !iif)
			return 0;
		in = bpf_map_lookup_elem(&filter_netns_ifindexes, &iif);
		if (!in)
			return 0;
		netns = *in;
		netns_from = FROM_IIF;
	}
	if (filter_ifindex && ifindex != filter_ifindex)
		return 0;
	if (filter_mark_mask && (mark & filter_mark_mask) != filter_mark)
		return 0;

	/*
	 * Not a network packet: no protocol and no MAC header, or a buffer a
	 * local socket of another kind holds (netlink, unix, vsock: their
	 * reads pass skb_copy_datagram_iovec too).
	 */
	if ((!protocol && mh == (__u16)~0U) || sk_family == 1 /* AF_UNIX */ ||
	    sk_family == 16 /* AF_NETLINK */ || sk_family == 40 /* AF_VSOCK */) {
		if (!show_non_packets) {
			count(CNT_NOT_PACKET);
			return 0;
		}
		flags |= EVF_NOT_PACKET;
	}
	if (unjudged) {
		count(CNT_FILTER_NO_BYTES);
		return 0;
	}

	if (BPF_CORE_READ_BITFIELD(skb, cloned)) {
		int ref = 0;

		flags |= EVF_CLONED;
		/* skb_shinfo(skb)->dataref: this free has not dropped its reference yet. */
		if (!bpf_probe_read_kernel(&ref, sizeof(ref), head + skb->end +
					   bpf_core_field_offset(struct skb_shared_info, dataref)) &&
		    (ref & 0xffff) > 1)
			flags |= EVF_SHARED;
	}

	/* The reserved size is a constant: snap_len lives in frozen .rodata. */
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev) - SNAP_MAX + snap, 0);
	if (!ev) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}

	ev->ts = bpf_ktime_get_ns();
	ev->skb = (__u64)skb;
	ev->location = location;
	ev->head = (__u64)head;
	ev->reason = reason;
	ev->netns = netns;
	ev->ifindex = ifindex;
	ev->iif = iif;
	ev->mark = mark;
	ev->len = skb->len;
	ev->cpu = bpf_get_smp_processor_id();
	ev->protocol = protocol;
	ev->kind = kind;
	ev->nf_hook = nf_hook;
	ev->nf_pf = nf_pf;
	ev->sk_family = sk_family;
	ev->netns_from = netns_from;
	ev->if_from = if_from;
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

	if (n && bpf_probe_read_kernel(ev->data, n, head + off))
		n = 0;
	ev->cap_len = n;
	ev->flags = flags;

	bpf_ringbuf_submit(ev, (count(CNT_SUBMITTED) & (wakeup_every - 1)) ?
			       BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
	return 0;
}

/*
 * kfree_skb: skb, location, reason, and since 6.11 rx_sk, the receiving
 * socket that dropped it (its presence is read from the kernel's BTF; the
 * verifier never visits the branch where it is absent).
 */
SEC("tp_btf/kfree_skb")
int kfree_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct sock *rx_sk = NULL;

	if (bpf_core_field_exists(struct trace_event_raw_kfree_skb, rx_sk))
		rx_sk = (struct sock *)ctx[3];
	return emit(skb, ctx[1], (__u32)ctx[2], KIND_KFREE, EVF_HAS_LOCATION, rx_sk);
}

/* consume_skb with its location argument (kernel 6.3 and later). */
SEC("tp_btf/consume_skb")
int BPF_PROG(consume_skb, struct sk_buff *skb, void *location)
{
	return emit(skb, (__u64)location, 0, KIND_CONSUME, EVF_HAS_LOCATION, NULL);
}

/* consume_skb before 6.3: the tracepoint has the skb only. */
SEC("tp_btf/consume_skb")
int BPF_PROG(consume_skb_noloc, struct sk_buff *skb)
{
	return emit(skb, 0, 0, KIND_CONSUME, 0, NULL);
}

/*
 * A socket copies a packet to user space: the packet was delivered. Since
 * 5.19 (TCP) and 6.18 (UDP) the free that follows often passes no
 * tracepoint (skb_attempt_defer_free on the allocating CPU), so the read
 * is the delivery's sighting. A packet read in several parts (TCP, or a
 * peek first) is reported at its first read on this CPU.
 */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(skb_read, struct sk_buff *skb, int len)
{
	struct cpu_state *c = cpu_state();
	__u64 head = (__u64)skb->head;

	if (!c)
		return 0;
	if (c->read_skb == as_number(&c->scratch, skb) && c->read_head == head)
		return 0;
	c->read_skb = as_number(&c->scratch, skb);
	c->read_head = head;
	return emit(skb, 0, 0, KIND_READ, 0, NULL);
}

/*
 * Kernels with fentry: skb_attempt_defer_free frees the skb at once,
 * without a tracepoint, when this CPU allocated it; otherwise it hands it
 * to that CPU, whose flush passes consume_skb (napi_consume_skb).
 */
SEC("fentry/skb_attempt_defer_free")
int BPF_PROG(defer_free, struct sk_buff *skb)
{
	if (skb->alloc_cpu != bpf_get_smp_processor_id())
		return 0;
	return emit(skb, 0, 0, KIND_DEFER, 0, NULL);
}

/*
 * Kernels with fentry: a SYN a listener refuses (accept queue full, SYN
 * queue full without cookies) is freed with consume_skb where an accepted
 * one is freed too (tcp_rcv_state_process), so its free proves nothing.
 * What tells them apart is tcp_listendrop(): it counts a drop on the
 * listening socket during tcp_conn_request(). The refused skb is
 * remembered until its free on this CPU (the free follows on the same
 * CPU, in the same softirq).
 */
SEC("fentry/tcp_conn_request")
int BPF_PROG(listen_enter, void *rsk_ops, void *af_ops, struct sock *sk, struct sk_buff *skb)
{
	struct cpu_state *c = cpu_state();

	if (!c)
		return 0;
	c->syn_skb = as_number(&c->scratch, skb);
	c->syn_drops = sk->sk_drops.counter;
	return 0;
}

SEC("fexit/tcp_conn_request")
int BPF_PROG(listen_exit, void *rsk_ops, void *af_ops, struct sock *sk, struct sk_buff *skb, int ret)
{
	struct cpu_state *c = cpu_state();

	if (!c)
		return 0;
	if (c->syn_skb == as_number(&c->scratch, skb) && sk->sk_drops.counter != c->syn_drops) {
		c->refused_skb = c->syn_skb;
		c->refused_netns = sk_netns(sk);
	}
	c->syn_skb = 0;
	return 0;
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
	/* Links in every namespace when several are kept: skip the others. */
	if (filter_netns_n > 1 && !netns_kept(state->net->ns.inum))
		return false;
	return true;
}

static __always_inline void nf_record(struct sk_buff *skb, const struct nf_hook_state *state)
{
	struct nf_stack *st = nf_stack();
	struct nf_inflight *e;
	__u64 now, frame, stack;
	__u32 k;

	if (!st)
		return;
	now = bpf_jiffies64();
	frame = as_number(&st->scratch, state);
	stack = stack_of(frame);
	/*
	 * Entries whose chain has returned (this chain runs on their stack
	 * from a frame no deeper than theirs) left without nf_exit: a hook
	 * stole or queued their packet. Counted, not lost.
	 */
#pragma unroll
	for (k = 0; k < NF_STACK; k++) {
		e = &st->e[k];
		if (e->skb && e->stack == stack && e->frame <= frame) {
			e->skb = 0;
			count(now - e->jiffies < NF_STALE ? CNT_NF_STOLEN : CNT_NF_STALE);
		}
	}
#pragma unroll
	for (k = 0; k < NF_STACK; k++) {
		if (st->top == 0 || st->e[(st->top - 1) & (NF_STACK - 1)].skb)
			break;
		st->top--;
	}
	if (nf_depth < NF_STACK && st->top >= nf_depth) {
		count(CNT_NF_INFLIGHT_FULL); /* this chain goes unbracketed */
		return;
	}
	e = &st->e[st->top & (NF_STACK - 1)];
	/* Nested deeper than NF_STACK: a live entry is lost, and counted. */
	if (e->skb)
		count(now - e->jiffies < NF_STALE ? CNT_NF_INFLIGHT_FULL : CNT_NF_STALE);
	e->skb = (__u64)skb;
	e->jiffies = now;
	e->frame = frame;
	e->stack = stack;
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

	if (filter_netns_n && !netns_kept(state->net->ns.inum))
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
