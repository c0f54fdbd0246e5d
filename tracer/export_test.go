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
