package fate

import (
	"context"
	"errors"
)

// Source is one independent event source. It runs one or more observers
// (the ebpf source runs "ebpf", and "nf" when it attributes drops to
// netfilter hooks) and says where each of them is blind.
//
// The lifecycle is: CanRun (cheap, loads nothing), Start (loads and
// attaches; after it returns the source observes), Run (delivers events
// until ctx is done, then drains what was already observed and returns),
// Close (detaches; always call it, also when Start failed).
type Source interface {
	// Name is the source's name in output and on the command line ("ebpf").
	Name() string
	// Observers names the observers this source runs, as they appear in
	// fate records; valid after Start.
	Observers() []string
	// CanRun returns nil when the source can run on this kernel with these
	// privileges and these filters, or an error saying why not (wrapping
	// ebpf.ErrNotSupported, os.ErrNotExist or os.ErrPermission where that
	// applies, and ErrFilter when it cannot apply a filter).
	CanRun(f Filters) error
	// Start loads and attaches the source.
	Start() error
	// Run delivers every event to sink until ctx is done, then the events
	// already observed, and returns nil, or returns the error that stopped
	// it.
	Run(ctx context.Context, sink Sink) error
	// Blind returns why the observer (one of Observers) could not have
	// seen the packet of r, or "" when it could have. It is called from
	// the correlator's goroutine while r is judged.
	Blind(observer string, r *FateRecord) string
	// Losses returns every loss counter of this source, zero or not; a
	// counter that cannot be read is returned with Unknown set, never as
	// zero.
	Losses() []Loss
	// Close releases everything Start acquired.
	Close() error
}

// Informer is a Source that also counts what it did not show on purpose
// (skbs that are not packets, stolen packets): information, not losses.
type Informer interface {
	Information() []Loss
}

// Noticer is a Source with things to tell the user that are neither
// events nor losses (a recovery it could not prepare, another user's
// session it attached to). Notices may be called at any time after Start.
type Noticer interface {
	Notices() []string
}

// Filters is what the user asked to see, as every source is given it.
// Sources apply what they can in the kernel and refuse (CanRun) what they
// cannot apply; the user-space filters (the pcap expression, reasons) run
// after the sources, on every event.
type Filters struct {
	// Netns keeps only packets in these network namespaces (inode
	// numbers); empty keeps all.
	Netns []uint32
	// Ifindex keeps only packets on this interface (an index in the
	// namespace of Netns); 0 keeps all.
	Ifindex uint32
	// Mark and MarkMask keep packets with skb->mark & MarkMask == Mark; a
	// zero MarkMask keeps all.
	Mark, MarkMask uint32
	// Drops and Consumes select the fates to trace.
	Drops, Consumes bool
	// SnapLen is how many bytes of each packet to capture from its network
	// header.
	SnapLen int
}

// InKernel reports whether any filter must run where the packet is seen.
func (f Filters) InKernel() bool {
	return len(f.Netns) > 0 || f.Ifindex != 0 || f.MarkMask != 0
}

// Loss is one loss counter: events an observer did not deliver, counted
// where they were lost.
type Loss struct {
	// Observer is the observer that lost the events ("ebpf").
	Observer string `json:"observer"`
	// Name says where ("ringbuf_full").
	Name  string `json:"name"`
	Value uint64 `json:"value"`
	// Unknown, when set, says why the counter could not be read: its
	// value is unknown, and so is whether the capture is complete.
	Unknown string `json:"unknown,omitempty"`
}

// Key is the counter's name in flat tables and the live status line
// ("ebpf_ringbuf_full").
func (l Loss) Key() string { return l.Observer + "_" + l.Name }

// Counter is a named count in a summary table ("NO_SOCKET": 12).
type Counter struct {
	Name  string
	Value uint64
}

// ErrFilter is wrapped by CanRun errors of a source that cannot apply one
// of the filters (NET_DM alerts carry no network namespace, say).
var ErrFilter = errors.New("cannot apply the filter")
