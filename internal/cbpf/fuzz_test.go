package cbpf

import (
	"errors"
	"hash/fnv"
	"slices"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/pktfate/pktfate/internal/pcapfilter"
)

// fuzzFilter is an expression loaded for the fuzz target.
type fuzzFilter struct {
	expr   string
	filter *pcapfilter.Filter
	k      *kernelFilter
}

// fuzzFilters caches loaded expressions across a fuzz worker's runs: a
// load (the verifier) costs far more than a run.
var fuzzFilters struct {
	m     map[string]*fuzzFilter
	order []string
}

const fuzzCacheSize = 64

// fuzzExpr returns expr loaded in the kernel when libpcap compiles it and
// user space can be the reference (no negation, which golang.org/x/net/bpf
// cannot run, and nothing the translation refuses); otherwise the corpus
// expression expr hashes to. ok is false when neither applies.
func fuzzExpr(t *testing.T, corpus []string, expr string) (*fuzzFilter, bool) {
	t.Helper()
	if ff, ok := fuzzFilters.m[expr]; ok {
		return ff, true
	}
	f, err := pcapfilter.Compile(expr)
	if err != nil || f == nil || usesNeg(f) {
		h := fnv.New32a()
		h.Write([]byte(expr))
		expr = corpus[h.Sum32()%uint32(len(corpus))]
		if ff, ok := fuzzFilters.m[expr]; ok {
			return ff, true
		}
		f = compile(t, expr)
	}
	k, err := loadFilter(t, f.Program())
	if errors.Is(err, ErrUnsupported) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	if fuzzFilters.m == nil {
		fuzzFilters.m = make(map[string]*fuzzFilter)
	}
	if len(fuzzFilters.order) == fuzzCacheSize {
		old := fuzzFilters.order[0]
		fuzzFilters.m[old].k.Close()
		delete(fuzzFilters.m, old)
		fuzzFilters.order = fuzzFilters.order[1:]
	}
	ff := &fuzzFilter{expr: expr, filter: f, k: k}
	fuzzFilters.m[expr] = ff
	fuzzFilters.order = append(fuzzFilters.order, expr)
	return ff, true
}

func usesNeg(f *pcapfilter.Filter) bool {
	return slices.ContainsFunc(f.Program(), func(ri bpf.RawInstruction) bool { return ri.Op == clsALU|aluNEG })
}

// FuzzKernel mutates packets and expressions (a mutated expression libpcap
// does not compile picks a corpus expression) and checks the translated
// filter's verdict in the kernel equals pcapfilter's in user space. Go
// saves a failing input under testdata/fuzz/FuzzKernel: it then runs with
// every `go test` as a regression case.
func FuzzKernel(f *testing.F) {
	corpus := expressions(f)
	for i, p := range testPackets(f) {
		f.Add(corpus[i%len(corpus)], false, p.etherType, p.l3)
		f.Add(corpus[(7*i+3)%len(corpus)], true, p.etherType, p.l2)
	}
	f.Fuzz(func(t *testing.T, expr string, l2 bool, proto uint16, data []byte) {
		requireKernel(t)
		ff, ok := fuzzExpr(t, corpus, expr)
		if !ok {
			t.Skip("the translation refuses the expression")
		}
		if len(data) > MaxLen {
			data = data[:MaxLen]
		}
		v := L3
		if l2 {
			v = L2
		}
		want := ff.filter.Match(proto, data, l2)
		for _, a := range []addr{addrScalar, addrPointer} {
			got, err := ff.k.run(v, proto, data, a)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("%q, %s, proto %#04x, %d bytes %x: kernel %v, user space %v", ff.expr, v, proto, len(data), data, got, want)
			}
		}
	})
}
