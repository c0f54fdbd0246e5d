package ringrec

import (
	"sync/atomic"

	"github.com/pktfate/pktfate/fate"
)

// Stream turns the ebpf source's records into events as the live source
// and pktfate report's reading of a raw capture both do: it decodes each
// one and drops the free of a packet a socket read (its delivery was the
// read). Not safe for concurrent use.
type Stream struct {
	Decoder *Decoder
	reads   ReadSet
	// FreedAfterRead counts the frees dropped after a read; DecodeErrors
	// the records that could not be decoded. Both may be read while
	// another goroutine calls Next.
	FreedAfterRead, DecodeErrors atomic.Uint64
}

// Next decodes raw into ev and reports whether it is an event to pass on
// (false: undecodable, counted, or the free after a read).
func (s *Stream) Next(raw []byte, ev *fate.Event) bool {
	if err := s.Decoder.Decode(raw, ev); err != nil {
		s.DecodeErrors.Add(1)
		return false
	}
	switch ev.Probe {
	case "read":
		s.reads.Add(ev.Skb, ev.Head)
	case "consume_skb", "defer_free":
		// The BPF program drops the free after a read on the same CPU; a
		// free on another CPU (the deferred free's flush) comes here,
		// after the read in the ring's order.
		if s.reads.Take(ev.Skb, ev.Head) {
			s.FreedAfterRead.Add(1)
			return false
		}
	}
	return true
}

// ReadSet remembers the packets sockets read lately (skb and data
// addresses), so that their later free on another CPU is not reported as
// a second delivery. It is bounded: the oldest are forgotten first.
type ReadSet struct {
	ring [ReadSetSize]readKey
	next int
	m    map[readKey]bool
}

type readKey struct{ skb, head uint64 }

// ReadSetSize is how many reads wait for their free; a free comes within
// microseconds of the read unless the socket is closed with the packet.
const ReadSetSize = 4096

func (r *ReadSet) Add(skb, head uint64) {
	if r.m == nil {
		r.m = make(map[readKey]bool, ReadSetSize)
	}
	k := readKey{skb, head}
	if r.m[k] {
		return
	}
	delete(r.m, r.ring[r.next])
	r.ring[r.next] = k
	r.next = (r.next + 1) % ReadSetSize
	r.m[k] = true
}

// Take reports whether skb was read and forgets it.
func (r *ReadSet) Take(skb, head uint64) bool {
	k := readKey{skb, head}
	if !r.m[k] {
		return false
	}
	delete(r.m, k)
	return true
}
