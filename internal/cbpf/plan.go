package cbpf

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// ival is an interval of uint32 values, [lo, hi], kept in uint64 so that
// sums and products of two bounds cannot overflow.
type ival struct{ lo, hi uint64 }

const maxU32 = 1<<32 - 1

var full = ival{0, maxU32}

func konst(v uint64) ival { return ival{v, v} }

func (a ival) join(b ival) ival { return ival{min(a.lo, b.lo), max(a.hi, b.hi)} }

// ones is the smallest all-ones value not below v (the bound of v|w and
// v^w for w <= v).
func ones(v uint64) uint64 {
	m := uint64(0)
	for m < v {
		m = m<<1 | 1
	}
	return m
}

// alu bounds A op B for A in a and B in b, with uint32 wrap-around (any
// possible overflow gives the full range). Division and modulo by zero end
// the program, so only non-zero divisors count.
func alu(op uint16, a, b ival) ival {
	switch op {
	case aluADD:
		if a.hi+b.hi <= maxU32 {
			return ival{a.lo + b.lo, a.hi + b.hi}
		}
	case aluSUB:
		if a.lo >= b.hi {
			return ival{a.lo - b.hi, a.hi - b.lo}
		}
	case aluMUL:
		if a.hi*b.hi <= maxU32 {
			return ival{a.lo * b.lo, a.hi * b.hi}
		}
	case aluDIV:
		return ival{a.lo / max(b.hi, 1), a.hi / max(b.lo, 1)}
	case aluMOD:
		if b.hi == 0 {
			return konst(0)
		}
		return ival{0, min(a.hi, b.hi-1)}
	case aluAND:
		return ival{0, min(a.hi, b.hi)}
	case aluOR:
		return ival{max(a.lo, b.lo), ones(max(a.hi, b.hi))}
	case aluXOR:
		return ival{0, ones(max(a.hi, b.hi))}
	case aluLSH:
		// A shift by 32 or more gives 0, as in golang.org/x/net/bpf.
		if b.lo >= 32 {
			return konst(0)
		}
		if b.hi < 32 && a.hi<<b.hi <= maxU32 {
			return ival{0, a.hi << b.hi}
		}
	case aluRSH:
		if b.lo >= 32 {
			return konst(0)
		}
		return ival{0, a.hi >> b.lo}
	}
	return full
}

// readState says whether the packet bytes are in the stack buffer when
// control reaches an instruction: on no path, on every path, or on some.
type readState uint8

const (
	readNone readState = iota
	readDone
	readMaybe
)

func (r readState) join(o readState) readState {
	if r == o {
		return r
	}
	return readMaybe
}

// state is what the plan knows when control reaches an instruction.
type state struct {
	reached bool
	a, x    ival
	m       [scratchSlots]ival
	read    readState
}

func (s *state) join(o *state) {
	if !s.reached {
		*s = *o
		return
	}
	s.a, s.x = s.a.join(o.a), s.x.join(o.x)
	for i := range s.m {
		s.m[i] = s.m[i].join(o.m[i])
	}
	s.read = s.read.join(o.read)
}

// site says what a packet-reading instruction must do first.
type site uint8

const (
	siteNone  site = iota // the bytes are there (or not needed)
	siteRead              // read them: no path has
	siteMaybe             // read them unless this path has (flag in R9)
)

// plan is the translation's analysis of a classic program.
type plan struct {
	v       Variant
	hdr     uint32 // bytes in front of the data: 14 (L3) or 0 (L2)
	prog    []insn
	reached []bool
	// fails marks loads that can never succeed (their offset is beyond
	// hdr+MaxLen whatever X is): they end the program with no match.
	fails []bool
	sites []site
	// data is how many bytes to read: the farthest any load can reach,
	// at most MaxLen.
	data uint32
	// hdrInBuf: the synthetic Ethernet header must be in the buffer
	// (L3 with an indexed load or a load straddling header and data).
	hdrInBuf bool
	useProto bool // the program reads the EtherType
	useLen   bool // the program reads the packet length
	flag     bool // some site is siteMaybe: R9 says whether the read happened
	mLoaded  [scratchSlots]bool
	mUsed    bool
}

// needsBuffer reports whether the load must read packet bytes from the
// stack buffer (and not from the synthetic header alone).
func (p *plan) needsBuffer(in insn) bool {
	switch in.kind {
	case kLoadInd:
		return true
	case kLoadAbs, kLoadMsh:
		return in.k+in.size > p.hdr
	}
	return false
}

// alwaysFails reports whether a load can never succeed: it reaches past
// hdr+MaxLen for every X (X >= 0).
func (p *plan) alwaysFails(in insn) bool {
	switch in.kind {
	case kLoadAbs, kLoadInd, kLoadMsh:
		return uint64(in.k)+uint64(in.size) > uint64(p.hdr)+MaxLen
	}
	return false
}

func newPlan(raw []bpf.RawInstruction, v Variant) (*plan, error) {
	p := &plan{v: v}
	if v == L3 {
		p.hdr = ethHeaderLen
	}
	n := len(raw)
	if n == 0 {
		return nil, fmt.Errorf("empty program: %w", ErrUnsupported)
	}
	if n > maxClassicInsns {
		return nil, fmt.Errorf("%d instructions, more than the %d classic BPF allows: %w", n, maxClassicInsns, ErrUnsupported)
	}
	p.prog = make([]insn, n)
	for i, r := range raw {
		in, err := decode(r)
		if err != nil {
			return nil, fmt.Errorf("instruction %d: %w", i, err)
		}
		p.prog[i] = in
	}

	p.reached = make([]bool, n)
	p.fails = make([]bool, n)
	p.sites = make([]site, n)
	states := make([]state, n)
	states[0] = state{reached: true, read: readNone}
	var reach uint64 // farthest packet offset a load can end at
	for i, in := range p.prog {
		s := states[i]
		if !s.reached {
			continue
		}
		p.reached[i] = true
		if p.alwaysFails(in) {
			p.fails[i] = true
			continue
		}
		if p.needsBuffer(in) {
			switch s.read {
			case readNone:
				p.sites[i] = siteRead
			case readMaybe:
				p.sites[i] = siteMaybe
				p.flag = true
			}
			s.read = readDone
		}
		switch in.kind {
		case kLoadImm:
			s.setAX(in.x, konst(uint64(in.k)))
		case kLoadMem:
			s.setAX(in.x, s.m[in.k])
			p.mLoaded[in.k] = true
			p.mUsed = true
		case kLoadLen:
			s.setAX(in.x, full)
			p.useLen = true
		case kLoadAbs:
			s.a = ival{0, 1<<(8*in.size) - 1}
			end := uint64(in.k) + uint64(in.size)
			reach = max(reach, end)
			if p.v == L3 && in.k < p.hdr {
				p.useProto = true
				if end > uint64(p.hdr) {
					p.hdrInBuf = true
				}
			}
		case kLoadInd:
			s.a = ival{0, 1<<(8*in.size) - 1}
			reach = max(reach, s.x.hi+uint64(in.k)+uint64(in.size))
			if p.v == L3 {
				p.hdrInBuf = true
				p.useProto = true
			}
		case kLoadMsh:
			s.x = ival{0, 60}
			reach = max(reach, uint64(in.k)+1)
			if p.v == L3 && in.k < p.hdr {
				p.useProto = true
			}
		case kStore:
			if in.x {
				s.m[in.k] = s.x
			} else {
				s.m[in.k] = s.a
			}
			p.mUsed = true
		case kALU:
			b := konst(uint64(in.k))
			if in.x {
				b = s.x
			}
			if !in.x && in.k == 0 && (in.op == aluDIV || in.op == aluMOD) {
				continue // ends the program: no successor
			}
			s.a = alu(in.op, s.a, b)
		case kNeg:
			if s.a != konst(0) {
				s.a = full
			}
		case kTax:
			s.x = s.a
		case kTxa:
			s.a = s.x
		}
		for _, j := range in.successors(i) {
			if j < n {
				states[j].join(&s)
				continue
			}
			if in.kind == kJa || in.kind == kJcond {
				return nil, fmt.Errorf("instruction %d jumps past the end of the program (a backward jump, as protochain compiles to, wraps around): %w", i, ErrUnsupported)
			}
			return nil, fmt.Errorf("program does not end with a return: %w", ErrUnsupported)
		}
	}
	if reach > uint64(p.hdr) {
		p.data = uint32(min(reach-uint64(p.hdr), MaxLen))
	}
	return p, nil
}

func (s *state) setAX(x bool, v ival) {
	if x {
		s.x = v
	} else {
		s.a = v
	}
}
