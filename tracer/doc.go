// Package tracer holds pktfate's event sources: the BPF programs on the
// kfree_skb and consume_skb tracepoints and on the netfilter hooks (ebpf,
// nf), the kernel's drop monitor (dropmon) and pktfate.ko (kmod). Each
// implements fate.Source and turns what the kernel reports into
// fate.Events: one per sk_buff the kernel freed, saying whether the packet
// was dropped (where and why) or consumed.
//
// Data flows one way: sources produce events, the correlator and the
// renderers consume them; sources know nothing about output formats.
package tracer
