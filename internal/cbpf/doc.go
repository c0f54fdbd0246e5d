// Package cbpf runs pcap-filter expressions inside pktfate's BPF programs:
// it translates the classic BPF program libpcap compiles (for Ethernet,
// DLT_EN10MB: pcapfilter.Filter.Program) into the body of an eBPF
// BPF-to-BPF subprogram, and splices that body into a placeholder
// subprogram of a loaded-from-ELF ProgramSpec. Pure Go: it imports
// golang.org/x/net/bpf and github.com/cilium/ebpf, not libpcap.
//
// # Calling convention
//
// The translated subprogram is called with
//
//	R1  kernel address of the first packet byte (skb->head plus the network
//	    header's offset for L3, the MAC header's for L2); a scalar or a
//	    pointer, it is only handed to bpf_probe_read_kernel
//	R2  bytes that may be read from there (e.g. skb->tail minus the offset,
//	    capped at the snap length); clamped to MaxLen
//	R3  the packet's EtherType in host order (bpf_ntohs(skb->protocol)):
//	    what the synthetic Ethernet header of L3 carries; L2 ignores it
//	R4  the packet's length from the first byte: what "len", "less" and
//	    "greater" test (L3 adds the synthetic header's 14 bytes); pass R2
//	    to decide exactly as pcapfilter.Filter.Match does on captured bytes
//
// and returns R0 = 1 when the packet matches, 0 when not. It uses R0-R9
// (R6-R9 are its own: the JIT saves them for the caller) and at most
// MaxStack bytes of its own stack frame; it calls only
// bpf_probe_read_kernel (tracing, raw_tp and netfilter programs have it).
//
// # Semantics
//
// Those of classic BPF as golang.org/x/net/bpf runs it (so as pcapfilter
// matches in user space): 32-bit A and X, scratch memory M[0..15] (zero
// until stored), every load, ALU operation, jump and return. A load past
// the readable bytes ends the filter with no match, as tcpdump -s does; so
// do a division or modulo by zero (as the kernel's classic BPF does); a
// shift by 32 or more gives 0 (golang.org/x/net/bpf's choice). Negation
// (A = -A), which golang.org/x/net/bpf cannot run, negates.
//
// Variant L3 is for bytes starting at the network header: the program,
// compiled for Ethernet, sees 14 bytes in front of them (zero MAC
// addresses, then the EtherType from R3), exactly what pcapfilter.Match
// puts in front in user space. Loads that fall in that header resolve at
// translation time; a program with indexed loads writes the header into
// its buffer so they need no branch. Variant L2 is for bytes starting at a
// real Ethernet header.
//
// # Cost
//
// The subprogram copies the bytes its loads can reach (the farthest
// constant offset, or the farthest an indexed load can reach given what X
// can hold: 60 after ldx 4*([k]&0xf), MaxLen when X comes from packet
// data) with one bpf_probe_read_kernel into its stack, the first time a
// path needs them, then loads them with plain, bounds-checked stack loads.
// A path that decides on the EtherType alone (arp, not ip6) reads nothing.
// A failed read counts as no bytes. The buffer is cleared before the read
// (a few stores: before 6.5 the verifier wants stack a helper writes a
// variable number of bytes to initialized). Measured with bpf_stats on the
// 6.18 host: 6 to 10 ns a run for port, host and flag filters, under 1 ns
// for one decided on the EtherType.
//
// # Placeholder
//
// The BPF C declares one placeholder per variant (bpf/include/pktfate_filter.h,
// shared by the tracer's programs and this package's test harness), and calls it before it
// reserves ring-buffer space:
//
//	static __noinline int pktfate_filter_l3(__u64 data, __u32 len, __u32 proto, __u32 pktlen)
//	{
//		int match = 1;
//
//		asm volatile("" : "+r"(match) : "r"(data), "r"(len), "r"(proto), "r"(pktlen));
//		return match;
//	}
//
// (pktfate_filter_l2 the same). Unspliced, it matches everything. __noinline
// keeps it a BPF-to-BPF call, so Splice finds its body under its ELF
// symbol. static, because a global function is verified on its own with
// scalar arguments, and skb->head is a typed pointer (rdonly_untrusted_mem)
// from Linux 6.18 on. The empty asm uses every argument, so clang can
// neither drop one nor know the result (else it would fold "returns 1" into
// the callers). Do not pass a compile-time constant as an argument: clang
// may propagate it into the static function and drop the parameter. Then
//
//	filter, err := cbpf.Translate(f.Program(), cbpf.L3)
//	if errors.Is(err, cbpf.ErrUnsupported) { ... run f in user space, say so once ... }
//	n, err := cbpf.SpliceCollection(spec, "pktfate_filter_l3", filter)
//
// before loading spec.
//
// # Unsupported
//
// Translate refuses (ErrUnsupported) what it cannot run in the kernel: a
// jump past the end (protochain compiles to a backward jump that wraps
// around), Linux BPF extensions and special offsets (ld #ifidx, SKF_NET_OFF
// loads), invalid instructions, programs longer than classic BPF's 4096
// instructions or whose translation has a jump longer than eBPF's 32767.
//
// Kernels: 6.1 and later (BPF-to-BPF calls, bpf_probe_read_kernel,
// 32-bit jumps, variable-offset stack reads, which need CAP_PERFMON).
package cbpf
