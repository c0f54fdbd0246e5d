package tracer

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
// here only when every consume at that function is a refusal. It is empty:
// the two refusals known to be freed with consume_skb are freed where
// accepted packets are freed too (docs/inferred-reasons.md), so their
// location proves nothing on its own.
var inferredReasons = map[string]string{}

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
