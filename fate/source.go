package fate

import "context"

// Source is one independent observer of packet fates.
//
// The lifecycle is: CanRun (cheap, loads nothing), Start (loads and
// attaches; after it returns the source observes), Run (delivers events
// until ctx is done, then drains what was already observed and returns),
// Close (detaches; always call it, also when Start failed).
type Source interface {
	// Name is the source's name in output and on the command line ("ebpf").
	Name() string
	// CanRun returns nil when the source can run on this kernel with these
	// privileges, or an error saying why not (wrapping
	// ebpf.ErrNotSupported or os.ErrPermission where that applies).
	CanRun() error
	// Start loads and attaches the source.
	Start() error
	// Run calls h for every event until ctx is done, then delivers the
	// events already observed and returns nil, or returns the error that
	// stopped it.
	Run(ctx context.Context, h Handler) error
	// Losses returns every counter of events this source lost.
	Losses() []Counter
	// Close releases everything Start acquired.
	Close() error
}

// Counter is a named count, such as the events a source lost at one place.
type Counter struct {
	// Name is the counter's key in output ("ebpf_ringbuf_full").
	Name  string
	Value uint64
}
