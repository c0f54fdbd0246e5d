package cbpf

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Classic BPF opcode fields (include/uapi/linux/bpf_common.h, filter.h).
const (
	clsLD   = 0x00
	clsLDX  = 0x01
	clsST   = 0x02
	clsSTX  = 0x03
	clsALU  = 0x04
	clsJMP  = 0x05
	clsRET  = 0x06
	clsMISC = 0x07

	szW = 0x00
	szH = 0x08
	szB = 0x10

	modeIMM = 0x00
	modeABS = 0x20
	modeIND = 0x40
	modeMEM = 0x60
	modeLEN = 0x80
	modeMSH = 0xa0

	srcK = 0x00
	srcX = 0x08

	aluADD = 0x00
	aluSUB = 0x10
	aluMUL = 0x20
	aluDIV = 0x30
	aluOR  = 0x40
	aluAND = 0x50
	aluLSH = 0x60
	aluRSH = 0x70
	aluNEG = 0x80
	aluMOD = 0x90
	aluXOR = 0xa0

	jmpJA   = 0x00
	jmpJEQ  = 0x10
	jmpJGT  = 0x20
	jmpJGE  = 0x30
	jmpJSET = 0x40

	retK = 0x00
	retA = 0x10

	miscTAX = 0x00
	miscTXA = 0x80

	// skfLLOff is SKF_LL_OFF: absolute offsets from here up select the
	// kernel's special areas (SKF_LL_OFF, SKF_NET_OFF) and extensions
	// (SKF_AD_OFF, e.g. ld #ifidx), which only a socket filter has.
	skfLLOff = 0xffe00000

	// maxClassicInsns is BPF_MAXINSNS.
	maxClassicInsns = 4096
	// scratchSlots is BPF_MEMWORDS.
	scratchSlots = 16
)

type kind uint8

const (
	kLoadImm kind = iota // A or X = K
	kLoadMem             // A or X = M[K]
	kLoadLen             // A or X = packet length
	kLoadAbs             // A = P[K:size]
	kLoadInd             // A = P[X+K:size]
	kLoadMsh             // X = 4*(P[K]&0xf)
	kStore               // M[K] = A or X
	kALU                 // A = A op K/X
	kNeg                 // A = -A
	kJa                  // pc += K
	kJcond               // pc += cond ? jt : jf
	kRet                 // return K or A
	kTax                 // X = A
	kTxa                 // A = X
)

// insn is one decoded classic instruction.
type insn struct {
	kind kind
	x    bool   // loads and stores: X is the register; ALU and jumps: X is the operand; ret: A
	size uint32 // packet loads: 1, 2 or 4 bytes
	op   uint16 // ALU or jump operation
	k    uint32
	jt   uint8
	jf   uint8
}

// decode accepts exactly the opcodes the kernel's classic BPF checker
// accepts (net/core/filter.c, bpf_check_classic), with the same meaning.
func decode(ri bpf.RawInstruction) (insn, error) {
	op := ri.Op
	in := insn{k: ri.K, jt: ri.Jt, jf: ri.Jf}
	bad := func(what string) (insn, error) {
		return insn{}, fmt.Errorf("%s (opcode %#04x, k %#x): %w", what, op, ri.K, ErrUnsupported)
	}
	if op > 0xff {
		return bad("unknown opcode")
	}
	switch op & 0x07 {
	case clsLD, clsLDX:
		in.x = op&0x07 == clsLDX
		switch op {
		case clsLD | szW | modeIMM, clsLDX | szW | modeIMM:
			in.kind = kLoadImm
		case clsLD | szW | modeMEM, clsLDX | szW | modeMEM:
			in.kind = kLoadMem
		case clsLD | szW | modeLEN, clsLDX | szW | modeLEN:
			in.kind = kLoadLen
		case clsLD | szW | modeABS, clsLD | szH | modeABS, clsLD | szB | modeABS:
			in.kind = kLoadAbs
		case clsLD | szW | modeIND, clsLD | szH | modeIND, clsLD | szB | modeIND:
			in.kind = kLoadInd
		case clsLDX | szB | modeMSH:
			in.kind = kLoadMsh
			in.size = 1
		default:
			return bad("unknown load")
		}
		if in.kind == kLoadAbs || in.kind == kLoadInd {
			switch op & 0x18 {
			case szW:
				in.size = 4
			case szH:
				in.size = 2
			case szB:
				in.size = 1
			}
		}
		if in.kind == kLoadMem && in.k >= scratchSlots {
			return bad("scratch memory index out of range")
		}
		if (in.kind == kLoadAbs || in.kind == kLoadInd || in.kind == kLoadMsh) && in.k >= skfLLOff {
			return bad("Linux BPF extension or special offset")
		}
	case clsST, clsSTX:
		if op != clsST && op != clsSTX {
			return bad("unknown store")
		}
		in.kind = kStore
		in.x = op == clsSTX
		if in.k >= scratchSlots {
			return bad("scratch memory index out of range")
		}
	case clsALU:
		in.op = op & 0xf0
		in.x = op&srcX != 0
		switch in.op {
		case aluADD, aluSUB, aluMUL, aluDIV, aluOR, aluAND, aluLSH, aluRSH, aluMOD, aluXOR:
			in.kind = kALU
		case aluNEG:
			if op != clsALU|aluNEG {
				return bad("unknown ALU operation")
			}
			in.kind = kNeg
		default:
			return bad("unknown ALU operation")
		}
	case clsJMP:
		in.op = op & 0xf0
		in.x = op&srcX != 0
		switch in.op {
		case jmpJA:
			if op != clsJMP|jmpJA {
				return bad("unknown jump")
			}
			in.kind = kJa
		case jmpJEQ, jmpJGT, jmpJGE, jmpJSET:
			in.kind = kJcond
		default:
			return bad("unknown jump")
		}
	case clsRET:
		switch op {
		case clsRET | retK:
		case clsRET | retA:
			in.x = true
		default:
			return bad("unknown return")
		}
		in.kind = kRet
	case clsMISC:
		switch op {
		case clsMISC | miscTAX:
			in.kind = kTax
		case clsMISC | miscTXA:
			in.kind = kTxa
		default:
			return bad("unknown misc instruction")
		}
	}
	return in, nil
}

// successors lists the instructions control can go to after prog[i]
// (indices may be out of range: the caller checks).
func (in insn) successors(i int) []int {
	switch in.kind {
	case kRet:
		return nil
	case kJa:
		return []int{i + 1 + int(in.k)}
	case kJcond:
		t, f := i+1+int(in.jt), i+1+int(in.jf)
		if t == f {
			return []int{t}
		}
		return []int{t, f}
	}
	return []int{i + 1}
}
