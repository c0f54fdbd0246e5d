package cbpf

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"os"
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

// classicOps are the opcodes FuzzProgram builds programs from: every one
// the translation accepts.
var classicOps = []uint16{
	clsLD | szW | modeIMM, clsLDX | szW | modeIMM,
	clsLD | szW | modeMEM, clsLDX | szW | modeMEM, clsST, clsSTX,
	clsLD | szW | modeLEN, clsLDX | szW | modeLEN,
	clsLD | szW | modeABS, clsLD | szH | modeABS, clsLD | szB | modeABS,
	clsLD | szW | modeIND, clsLD | szH | modeIND, clsLD | szB | modeIND,
	clsLDX | szB | modeMSH,
	clsALU | aluADD | srcK, clsALU | aluSUB | srcK, clsALU | aluMUL | srcK, clsALU | aluDIV | srcK,
	clsALU | aluOR | srcK, clsALU | aluAND | srcK, clsALU | aluLSH | srcK, clsALU | aluRSH | srcK,
	clsALU | aluMOD | srcK, clsALU | aluXOR | srcK,
	clsALU | aluADD | srcX, clsALU | aluSUB | srcX, clsALU | aluMUL | srcX, clsALU | aluDIV | srcX,
	clsALU | aluOR | srcX, clsALU | aluAND | srcX, clsALU | aluLSH | srcX, clsALU | aluRSH | srcX,
	clsALU | aluMOD | srcX, clsALU | aluXOR | srcX, clsALU | aluNEG,
	clsJMP | jmpJA, clsJMP | jmpJEQ | srcK, clsJMP | jmpJGT | srcK, clsJMP | jmpJGE | srcK, clsJMP | jmpJSET | srcK,
	clsJMP | jmpJEQ | srcX, clsJMP | jmpJGT | srcX, clsJMP | jmpJGE | srcX, clsJMP | jmpJSET | srcX,
	clsRET | retK, clsRET | retA, clsMISC | miscTAX, clsMISC | miscTXA,
}

// programFrom turns fuzz bytes into a valid classic program: 8 bytes an
// instruction (opcode, jt, jf, a byte choosing K's range, K), jumps kept
// inside the program, two returns at the end.
func programFrom(b []byte) []bpf.RawInstruction {
	n := min(len(b)/8, 64)
	prog := make([]bpf.RawInstruction, 0, n+2)
	for i := 0; i < n; i++ {
		c := b[8*i : 8*i+8]
		op := classicOps[int(c[0])%len(classicOps)]
		k := uint32(c[4]) | uint32(c[5])<<8 | uint32(c[6])<<16 | uint32(c[7])<<24
		switch c[3] % 4 {
		case 0:
			k %= 80
		case 1:
			k %= 16
		case 2:
			k %= 300
		}
		left := n - i // instructions after this one: the rest and the two returns, minus one
		switch {
		case op == clsJMP|jmpJA:
			k %= uint32(left + 1)
		case op&0x07 == clsLD && op&0xe0 == modeMEM, op&0x07 == clsLDX && op&0xe0 == modeMEM, op == clsST, op == clsSTX:
			k %= scratchSlots
		case (op == clsALU|aluDIV|srcK || op == clsALU|aluMOD|srcK) && k == 0:
			k = 1 // x/net/bpf refuses a constant zero divisor (TestALU covers it)
		}
		prog = append(prog, bpf.RawInstruction{Op: op, Jt: c[1] % uint8(min(left+1, 255)), Jf: c[2] % uint8(min(left+1, 255)), K: k})
	}
	return append(prog, bpf.RawInstruction{Op: clsRET | retA}, bpf.RawInstruction{Op: clsRET | retK, K: 1})
}

// FuzzProgram translates programs built from fuzz bytes and runs them on
// a fuzzed packet in the Go interpreter and, as root, in the kernel: both
// must agree, and with golang.org/x/net/bpf when it can run the program
// (not negation, not ldx len).
func FuzzProgram(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 40 {
		b := make([]byte, 8*(1+rng.IntN(20)))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := randomPacket(rng)
		f.Add(b, false, p.proto, p.data)
	}
	root := os.Geteuid() == 0
	f.Fuzz(func(t *testing.T, code []byte, l2 bool, proto uint16, data []byte) {
		prog := programFrom(code)
		if len(data) > MaxLen {
			data = data[:MaxLen]
		}
		v := L3
		if l2 {
			v = L2
		}
		p := pkt{proto: proto, data: data}
		got, _ := interpret(t, prog, v, p)
		if !slices.ContainsFunc(prog, func(ri bpf.RawInstruction) bool {
			return ri.Op == clsALU|aluNEG || ri.Op == clsLDX|szW|modeLEN
		}) {
			if ref := reference(t, prog, v, p); got != ref {
				t.Fatalf("%s, proto %#04x, %x: translation %v, x/net/bpf %v\n%s", v, proto, data, got, ref, disasm(prog))
			}
		}
		if !root {
			return
		}
		requireKernel(t)
		k, err := loadFilter(t, prog)
		if err != nil {
			t.Fatalf("%v\n%s", err, disasm(prog))
		}
		defer k.Close()
		kern, err := k.run(v, proto, data, addrScalar)
		if err != nil {
			t.Fatal(err)
		}
		if kern != got {
			t.Fatalf("%s, proto %#04x, %x: kernel %v, interpreter %v\n%s", v, proto, data, kern, got, disasm(prog))
		}
	})
}
