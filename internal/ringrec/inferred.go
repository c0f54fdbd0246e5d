package ringrec

// InferredReasons maps the kernel functions that free a refused packet
// with consume_skb (no drop reason, as if it had been processed) to a
// reason of pktfate's own that names the kernel's counter for that
// refusal. A consume at one of these functions is reported as a drop with
// that reason and Event.ReasonInferred set. docs/inferred-reasons.md
// lists them with the kernel code each one stands for.
type InferredReasons struct {
	byFunc map[string]string
}

// inferredReasons is the one table: function -> reason. Each entry cites
// the kernel code that frees the refused packet there; an entry belongs
// here only when every consume at that function is a refusal
// (docs/inferred-reasons.md, with the refusals left out and why).
var inferredReasons = map[string]string{
	// net/ipv4/inet_fragment.c (6.12 and 7.2; 6.1 uses kfree_skb): inet_frag_destroy()
	// frees the fragments still queued with inet_frag_rbtree_purge(...,
	// SKB_CONSUMED). A queue that reassembled has none left
	// (inet_frag_reasm_finish() empties rb_fragments), so a fragment
	// freed there belongs to a datagram never reassembled: its queue was
	// killed (overlap, oversize, a fragment after the last) or expired,
	// or its namespace went. IPv4, IPv6 and conntrack's IPv6 defrag share
	// the code; the kernel counts them in ReasmFails. Kernels like 6.1
	// free them with kfree_skb(): a drop (NOT_SPECIFIED) already.
	"inet_frag_rbtree_purge": "REASM_FAILS (inferred from inet_frag_rbtree_purge)",
}

// ReasonListenDrop is a SYN a listener refused: tcp_conn_request()
// counted a listen drop (tcp_listendrop: ListenDrops, and ListenOverflows
// when the accept queue was full) while it handled the skb, which
// tcp_rcv_state_process() then frees with consume_skb like an accepted
// one. Seen with fentry on tcp_conn_request (EBPF.ListenDropsBlind says
// when not).
const ReasonListenDrop = "LISTEN_DROP (inferred from tcp_conn_request)"

// NewInferredReasons returns a table of function -> reason (tests, and a
// table extended for a kernel of one's own).
func NewInferredReasons(byFunc map[string]string) *InferredReasons {
	return &InferredReasons{byFunc: byFunc}
}

// DefaultInferredReasons returns the table pktfate ships.
func DefaultInferredReasons() *InferredReasons {
	return &InferredReasons{byFunc: inferredReasons}
}

// Lookup returns the inferred reason of a consume in function fn, or "".
func (r *InferredReasons) Lookup(fn string) string {
	if r == nil {
		return ""
	}
	return r.byFunc[fn]
}
