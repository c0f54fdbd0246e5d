/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The few kernel types pktfate's BPF programs read, declared with
 * preserve_access_index so every access is a CO-RE relocation resolved
 * against the running kernel's BTF at load time. Only the members we
 * read are listed; their order and offsets here do not matter, and
 * members that live inside anonymous unions or structs in the kernel
 * are matched by name. One object therefore loads on 6.1 through 7.x.
 */
#ifndef __PKTFATE_VMLINUX_MIN_H__
#define __PKTFATE_VMLINUX_MIN_H__

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;

enum {
	false = 0,
	true = 1,
};

/* include/uapi/linux/bpf.h */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

enum {
	BPF_ANY = 0,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
};

struct sock_common {
	unsigned short skc_family;
	possible_net_t skc_net;
};

typedef struct {
	int counter;
} atomic_t;

struct sock {
	struct sock_common __sk_common;
	atomic_t sk_drops;
};

struct skb_shared_info {
	atomic_t dataref;
};

struct sk_buff {
	/*
	 * next, prev and dev share a union with rbnode (queued fragments,
	 * TCP's out-of-order queue: next is rbnode's parent and colour, dev
	 * its left child), and dev with dev_scratch (UDP's scratch while a
	 * datagram is queued on a socket): see skb_device().
	 */
	struct sk_buff *next;
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	unsigned int len;
	unsigned int data_len;
	__u8 cloned:1;
	int skb_iif;
	__u16 alloc_cpu;
	__u32 mark;
	__be16 protocol;
	__u16 network_header;
	__u16 mac_header;
	unsigned int tail;
	unsigned int end;
	unsigned char *head;
	unsigned char *data;
};

struct nsproxy {
	struct net *net_ns;
};

struct task_struct {
	void *stack;
	struct nsproxy *nsproxy;
};

struct nf_hook_state {
	__u8 hook;
	__u8 pf;
	struct net_device *in;
	struct net_device *out;
	struct net *net;
};

struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
};

/*
 * The kfree_skb tracepoint's record: rx_sk (the receiving socket that
 * dropped the packet) arrived in 6.11; its presence in the kernel's BTF
 * says whether the tp_btf program has a fourth argument.
 */
struct trace_event_raw_kfree_skb {
	void *rx_sk;
};

#pragma clang attribute pop

/* include/uapi/linux/netfilter.h */
#define NF_DROP 0
#define NF_ACCEPT 1

#endif /* __PKTFATE_VMLINUX_MIN_H__ */
