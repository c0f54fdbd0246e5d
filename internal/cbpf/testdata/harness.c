// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Test programs for internal/cbpf. They call the placeholder subprograms
 * pktfate_filter_l3 and pktfate_filter_l2 the way pktfate's own programs
 * do, with a kernel address the verifier knows only as a number, so the
 * tests prove the placeholder declaration, cbpf.Splice, the verifier's
 * verdict and the translated filter's behaviour in the running kernel.
 */
#include "vmlinux_min.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/uapi/linux/bpf.h: vmlinux_min.h has only the types pktfate uses. */
#define BPF_MAP_TYPE_ARRAY 2

/* The placeholders, as the tracer's programs declare them. */
#include "pktfate_filter.h"

/* One packet for the BPF_PROG_TEST_RUN programs, written by the test. */
struct pkt {
	__u32 len;	/* R2: bytes readable at data */
	__u32 proto;	/* R3 */
	__u32 pktlen;	/* R4 */
	__u32 bad;	/* non-zero: pass this unreadable address as R1 */
	__u32 ptr;	/* non-zero: pass the map value's pointer itself as R1 */
	__u32 loops;	/* bench_*: how many times to run the filter */
	__u32 matches;	/* bench_*: how many runs matched */
	__u8 data[512];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pkt);
} pkts SEC(".maps");

/* Force the generated Go type: bpf2go -type pkt. */
const struct pkt *unused_pkt __attribute__((unused));

/*
 * A map value's address as a scalar, as the verifier sees skb->head in a
 * tracepoint before 6.18. Copying the pointer through the stack with the
 * helper hides its type.
 */
static __always_inline __u64 scalar_addr(void *p)
{
	__u64 addr = 0;

	bpf_probe_read_kernel(&addr, sizeof(addr), &p);
	return addr;
}

static __always_inline struct pkt *packet(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pkts, &zero);
}

/*
 * R1 as the tracepoints see skb->head + offset: a number on some kernels,
 * a typed pointer (rdonly_untrusted_mem) on 6.18 and later; or a bad one.
 */
static __always_inline __u64 packet_addr(struct pkt *p)
{
	if (p->bad)
		return p->bad;
	if (p->ptr)
		return (__u64)p->data;
	return scalar_addr(p->data);
}

SEC("raw_tp")
int run_l3(void *ctx)
{
	struct pkt *p = packet();

	if (!p)
		return -1;
	return pktfate_filter_l3(packet_addr(p), p->len, p->proto, p->pktlen);
}

SEC("raw_tp")
int run_l2(void *ctx)
{
	struct pkt *p = packet();

	if (!p)
		return -1;
	return pktfate_filter_l2(packet_addr(p), p->len, p->proto, p->pktlen);
}

struct bench_ctx {
	struct pkt *p;
	__u64 addr;
	__u32 matches;
};

static long bench_l3_one(__u32 i, struct bench_ctx *c)
{
	c->matches += pktfate_filter_l3(c->addr, c->p->len, c->p->proto, c->p->pktlen);
	return 0;
}

static long bench_l2_one(__u32 i, struct bench_ctx *c)
{
	c->matches += pktfate_filter_l2(c->addr, c->p->len, c->p->proto, c->p->pktlen);
	return 0;
}

/* Run the filter p->loops times in one BPF_PROG_TEST_RUN. */
SEC("raw_tp")
int bench_l3(void *ctx)
{
	struct bench_ctx c = { .p = packet() };

	if (!c.p)
		return -1;
	c.addr = packet_addr(c.p);
	bpf_loop(c.p->loops, bench_l3_one, &c, 0);
	c.p->matches = c.matches;
	return 0;
}

SEC("raw_tp")
int bench_l2(void *ctx)
{
	struct bench_ctx c = { .p = packet() };

	if (!c.p)
		return -1;
	c.addr = packet_addr(c.p);
	bpf_loop(c.p->loops, bench_l2_one, &c, 0);
	c.p->matches = c.matches;
	return 0;
}

/*
 * The real context: kfree_skb in the network namespace want_netns, as
 * pktfate's tracepoint program runs the filter. hits[0] counts the drops
 * seen, hits[1] those the L3 filter matched, hits[2] those with a MAC
 * header, hits[3] those the L2 filter matched.
 */
const volatile __u32 want_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	struct net_device *dev = skb->dev;
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header, mh = skb->mac_header;
	__u32 tail = skb->tail, start = skb->data - head;
	__u32 proto = bpf_ntohs(skb->protocol);

	if (!dev || dev->nd_net.net->ns.inum != want_netns || nh == (__u16)~0U)
		return 0;
	hit(0);
	if (pktfate_filter_l3((__u64)(head + nh), tail > nh ? tail - nh : 0, proto,
			      skb->len + start - nh))
		hit(1);
	if (mh == (__u16)~0U)
		return 0;
	hit(2);
	if (pktfate_filter_l2((__u64)(head + mh), tail > mh ? tail - mh : 0, proto,
			      skb->len + start - mh))
		hit(3);
	return 0;
}
