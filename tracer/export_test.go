package tracer

import "time"

// SetNetfilterLookEvery sets how often the netfilter links look for new
// namespaces and chains, until the returned function puts it back: a test
// that sets an hour proves that what it waits for came another way.
func SetNetfilterLookEvery(d time.Duration) (restore func()) {
	old := nfRescanEvery
	nfRescanEvery = d
	return func() { nfRescanEvery = old }
}

// WaitSymbols waits until the source's kernel symbols have loaded. The
// first event's decoding waits for them, and under TCG with the race
// detector reading /proc/kallsyms takes seconds: a test that gives an
// event a few seconds to arrive waits for them first.
func (s *EBPF) WaitSymbols() { _ = s.decoder.Symbols.Err() }
