/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The placeholders of the pcap-filter expression (internal/cbpf): user space
 * replaces their bodies with the expression translated from libpcap's
 * classic BPF, for bytes from the network header (l3, a synthetic Ethernet
 * header in front) or from a real MAC header (l2). Unspliced they match
 * everything.
 *
 * static and __noinline, so each stays a BPF-to-BPF call under its own ELF
 * symbol that the verifier checks in its caller's context (a global
 * function would need scalar arguments, and skb->head is a typed pointer
 * from 6.18 on); the empty asm uses every argument and makes the result
 * unknown to the compiler, so callers keep the call, pass every argument
 * and test the result. Never pass a compile-time constant: clang may
 * propagate it into the function and drop the parameter.
 */
#ifndef PKTFATE_FILTER_H
#define PKTFATE_FILTER_H

static __noinline int pktfate_filter_l3(__u64 data, __u32 len, __u32 proto, __u32 pktlen)
{
	int match = 1;

	asm volatile("" : "+r"(match) : "r"(data), "r"(len), "r"(proto), "r"(pktlen));
	return match;
}

static __noinline int pktfate_filter_l2(__u64 data, __u32 len, __u32 proto, __u32 pktlen)
{
	int match = 1;

	asm volatile("" : "+r"(match) : "r"(data), "r"(len), "r"(proto), "r"(pktlen));
	return match;
}

#endif /* PKTFATE_FILTER_H */
