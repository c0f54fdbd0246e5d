package cbpf

import (
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/net/bpf"
)

// Variant says where the bytes a translated filter reads start.
type Variant int

const (
	// L3: the bytes start at the network header. The classic program,
	// compiled for Ethernet (DLT_EN10MB), sees a 14-byte Ethernet header in
	// front of them with zero MAC addresses and the EtherType passed in R3,
	// as pcapfilter.Filter.Match puts in front in user space.
	L3 Variant = iota
	// L2: the bytes start at an Ethernet (MAC) header.
	L2
)

func (v Variant) String() string {
	switch v {
	case L3:
		return "L3"
	case L2:
		return "L2"
	}
	return fmt.Sprintf("Variant(%d)", int(v))
}

// MaxLen is the most bytes a translated filter reads from the packet: the
// length passed in R2 is clamped to it (pktfate's largest snap length), and
// a load beyond it does not match.
const MaxLen = 256

// MaxStack is the most stack the translated subprogram uses, in bytes. The
// kernel allows 512 for a call chain: the callers' frames must fit in the rest.
const MaxStack = 352

// ErrUnsupported is wrapped by the errors of programs Translate cannot turn
// into eBPF (a jump past the end, as protochain's backward jumps compile to;
// a Linux BPF extension such as ld #ifidx; an invalid instruction). Callers
// run such filters in user space.
var ErrUnsupported = errors.New("classic BPF program cannot run in the kernel")

const ethHeaderLen = 14

// Registers of the translated subprogram. R1-R5 are free after the one
// helper call; R6-R9 are the subprogram's own (the JIT saves them).
const (
	regA    = asm.R6
	regX    = asm.R7
	regN    = asm.R8 // bytes valid in the buffer, counted from packet offset 0
	regFlag = asm.R9 // 1 until the packet has been read (only with plan.flag)
)

// Stack frame: fixed slots at the top, then the scratch memory, then the
// buffer holding the packet (header and data) from offset bo.
const (
	offAddr  = -8  // u64: R1 on entry
	offProto = -12 // u32: R3 on entry, & 0xffff
	offLen   = -16 // u32: R4 on entry
	offMem   = -80 // u32 M[k] at offMem + 4k
)

const labelFail = -1

type fixup struct {
	at int // index of the jump in out
	to int // classic instruction index or labelFail
}

type emitter struct {
	p      *plan
	out    asm.Instructions
	fixes  []fixup
	pos    map[int]int
	bo     int16  // stack offset of packet offset 0
	bufLen uint32 // packet bytes the buffer covers: hdr + data
}

// Translate turns a classic BPF program, as libpcap compiles it for
// Ethernet (pcapfilter.Filter.Program), into the body of an eBPF
// BPF-to-BPF subprogram with the package's calling convention: R1 the
// kernel address of the first packet byte, R2 the bytes readable there, R3
// the EtherType in host order, R4 the packet's length; R0 = 1 on a match,
// 0 if not. The first instruction carries no symbol: Splice puts the
// placeholder's on it.
//
// An error wraps ErrUnsupported when the program cannot be translated.
func Translate(prog []bpf.RawInstruction, v Variant) (asm.Instructions, error) {
	if v != L3 && v != L2 {
		return nil, fmt.Errorf("translating filter: unknown variant %d", int(v))
	}
	p, err := newPlan(prog, v)
	if err != nil {
		return nil, fmt.Errorf("translating filter: %w", err)
	}
	e := &emitter{p: p, pos: make(map[int]int)}
	e.prologue()
	for i, in := range p.prog {
		if !p.reached[i] {
			continue
		}
		e.pos[i] = len(e.out)
		e.insn(i, in)
	}
	if e.used(labelFail) {
		e.pos[labelFail] = len(e.out)
		e.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
	}
	if err := e.resolve(); err != nil {
		return nil, fmt.Errorf("translating filter: %w", err)
	}
	return e.out, nil
}

func (e *emitter) emit(ins ...asm.Instruction) { e.out = append(e.out, ins...) }

func (e *emitter) used(label int) bool {
	for _, f := range e.fixes {
		if f.to == label {
			return true
		}
	}
	return false
}

func jumpOp(op asm.JumpOp, wide bool, src asm.Source) asm.OpCode {
	cls := asm.Jump32Class
	if wide {
		cls = asm.JumpClass
	}
	return asm.OpCode(cls).SetJumpOp(op).SetSource(src)
}

// jumpImm emits "if dst op imm goto label" (32-bit compare unless wide).
func (e *emitter) jumpImm(op asm.JumpOp, wide bool, dst asm.Register, imm int64, label int) {
	e.fixes = append(e.fixes, fixup{at: len(e.out), to: label})
	e.emit(asm.Instruction{OpCode: jumpOp(op, wide, asm.ImmSource), Dst: dst, Constant: imm})
}

// jumpReg emits "if dst op src goto label".
func (e *emitter) jumpReg(op asm.JumpOp, wide bool, dst, src asm.Register, label int) {
	e.fixes = append(e.fixes, fixup{at: len(e.out), to: label})
	e.emit(asm.Instruction{OpCode: jumpOp(op, wide, asm.RegSource), Dst: dst, Src: src})
}

func (e *emitter) jumpTo(label int) {
	e.fixes = append(e.fixes, fixup{at: len(e.out), to: label})
	e.emit(asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource)})
}

// skipImm emits "if dst op imm skip n instructions" (64-bit compare).
func skipImm(op asm.JumpOp, wide bool, dst asm.Register, imm int64, n int16) asm.Instruction {
	return asm.Instruction{OpCode: jumpOp(op, wide, asm.ImmSource), Dst: dst, Constant: imm, Offset: n}
}

func (e *emitter) resolve() error {
	for _, f := range e.fixes {
		to, ok := e.pos[f.to]
		if !ok {
			return fmt.Errorf("internal error: jump to unplaced instruction %d", f.to)
		}
		off := to - f.at - 1
		if off < 0 || off > math.MaxInt16 {
			return fmt.Errorf("translated filter too large (a jump spans %d instructions): %w", off, ErrUnsupported)
		}
		e.out[f.at].Offset = int16(off)
	}
	return nil
}

func (e *emitter) usesBuffer() bool {
	for _, s := range e.p.sites {
		if s != siteNone {
			return true
		}
	}
	return false
}

func memOff(k uint32) int16 { return offMem + 4*int16(k) }

func (e *emitter) prologue() {
	p := e.p
	buf := e.usesBuffer()
	reads := buf && p.data > 0
	if buf {
		top := int(offLen)
		if p.mUsed {
			top = offMem
		}
		e.bufLen = p.hdr + p.data
		// Packet offset 14 (the network header in both variants) lands
		// on an 8-byte boundary, so aligned header fields load whole.
		bo := (top-int(e.bufLen)-2)&^7 + 2
		e.bo = int16(bo)
	}
	if reads {
		e.emit(asm.StoreMem(asm.RFP, offAddr, asm.R1, asm.DWord))
	}
	if p.useProto {
		e.emit(
			asm.And.Imm32(asm.R3, 0xffff),
			asm.StoreMem(asm.RFP, offProto, asm.R3, asm.Word),
		)
	}
	if p.useLen {
		e.emit(asm.StoreMem(asm.RFP, offLen, asm.R4, asm.Word))
	}
	switch {
	case reads:
		e.emit(
			asm.Mov.Reg32(regN, asm.R2),
			skipImm(asm.JLE, true, regN, int64(p.data), 1),
			asm.Mov.Imm(regN, int32(p.data)),
		)
		if p.hdr > 0 {
			e.emit(asm.Add.Imm(regN, int32(p.hdr)))
		}
	case buf:
		e.emit(asm.Mov.Imm(regN, int32(p.hdr)))
	}
	e.emit(asm.Mov.Imm32(regA, 0), asm.Mov.Imm32(regX, 0))
	if p.flag {
		e.emit(asm.Mov.Imm(regFlag, 1))
	}
	for k, loaded := range p.mLoaded {
		if loaded {
			e.emit(asm.StoreImm(asm.RFP, memOff(uint32(k)), 0, asm.Word))
		}
	}
}

// read copies the packet into the buffer (and the synthetic header in
// front of it when indexed loads need it there). With flagged, only if
// this path has not done so already.
func (e *emitter) read(flagged bool) {
	p := e.p
	skip := -1
	if flagged {
		skip = len(e.out)
		e.emit(skipImm(asm.JEq, true, regFlag, 0, 0))
	}
	if p.data > 0 {
		e.zero(int(e.bo)+int(p.hdr), int(e.bo)+int(p.hdr)+int(p.data))
		e.emit(
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, int32(e.bo)+int32(p.hdr)),
			asm.Mov.Reg(asm.R2, regN),
		)
		if p.hdr > 0 {
			e.emit(asm.Sub.Imm(asm.R2, int32(p.hdr)))
		}
		e.emit(
			asm.LoadMem(asm.R3, asm.RFP, offAddr, asm.DWord),
			asm.FnProbeReadKernel.Call(),
			skipImm(asm.JEq, true, asm.R0, 0, 1),
			asm.Mov.Imm(regN, int32(p.hdr)),
		)
	}
	if p.hdrInBuf {
		// bo is 2 mod 8: a half and three words cover 0..13 with
		// aligned stores, then the EtherType goes into 12..13.
		e.emit(
			asm.StoreImm(asm.RFP, e.bo, 0, asm.Half),
			asm.StoreImm(asm.RFP, e.bo+2, 0, asm.Word),
			asm.StoreImm(asm.RFP, e.bo+6, 0, asm.Word),
			asm.StoreImm(asm.RFP, e.bo+10, 0, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, offProto, asm.Word),
			asm.HostTo(asm.BE, asm.R1, asm.Half),
			asm.StoreMem(asm.RFP, e.bo+12, asm.R1, asm.Half),
		)
	}
	if p.flag {
		e.emit(asm.Mov.Imm(regFlag, 0))
	}
	if flagged {
		e.out[skip].Offset = int16(len(e.out) - skip - 1)
	}
}

// zero clears the stack from off to end (rounded up to 8 bytes, which
// stays below the fixed slots). A helper writing a variable number of
// bytes must find them initialized: the verifier of kernels before 6.5
// (6.1 among them), which do not let privileged programs read
// uninitialized stack, refuses the read otherwise.
func (e *emitter) zero(off, end int) {
	end = (end + 7) &^ 7
	e.emit(asm.Mov.Imm(asm.R1, 0))
	for off < end {
		size := asm.Byte
		switch {
		case off&7 == 0 && off+8 <= end:
			size = asm.DWord
		case off&3 == 0 && off+4 <= end:
			size = asm.Word
		case off&1 == 0 && off+2 <= end:
			size = asm.Half
		}
		e.emit(asm.StoreMem(asm.RFP, int16(off), asm.R1, size))
		off += size.Sizeof()
	}
}

func (e *emitter) site(i int) {
	switch e.p.sites[i] {
	case siteRead:
		e.read(false)
	case siteMaybe:
		e.read(true)
	}
}

func sizeOf(n uint32) asm.Size {
	switch n {
	case 1:
		return asm.Byte
	case 2:
		return asm.Half
	}
	return asm.Word
}

// loadBytes loads n big-endian bytes at base+off into dst. From the frame
// pointer at an aligned offset one load and a byte swap do; otherwise the
// bytes load one by one (the verifier wants stack accesses aligned).
func loadBytes(dst, base asm.Register, off int16, n uint32) asm.Instructions {
	if n == 1 {
		return asm.Instructions{asm.LoadMem(dst, base, off, asm.Byte)}
	}
	if base == asm.RFP && int(off)&int(n-1) == 0 {
		return asm.Instructions{
			asm.LoadMem(dst, base, off, sizeOf(n)),
			asm.HostTo(asm.BE, dst, sizeOf(n)),
		}
	}
	out := asm.Instructions{asm.LoadMem(dst, base, off, asm.Byte)}
	for j := int16(1); j < int16(n); j++ {
		out = append(out,
			asm.LSh.Imm32(dst, 8),
			asm.LoadMem(asm.R3, base, off+j, asm.Byte),
			asm.Or.Reg32(dst, asm.R3),
		)
	}
	return out
}

// headerBytes loads n bytes at offset k of the synthetic Ethernet header
// (k+n <= 14): zeros, then the EtherType in bytes 12 and 13.
func (e *emitter) headerBytes(dst asm.Register, k, n uint32) {
	end := k + n
	if end <= 12 {
		e.emit(asm.Mov.Imm32(dst, 0))
		return
	}
	e.emit(asm.LoadMem(dst, asm.RFP, offProto, asm.Word))
	if shift := 8 * (ethHeaderLen - end); shift > 0 {
		e.emit(asm.RSh.Imm32(dst, int32(shift)))
	} else if n == 1 {
		e.emit(asm.And.Imm32(dst, 0xff))
	}
}

func (e *emitter) insn(i int, in insn) {
	p := e.p
	if p.fails[i] {
		e.jumpTo(labelFail)
		return
	}
	dst := regA
	if in.x {
		dst = regX
	}
	switch in.kind {
	case kLoadImm:
		e.emit(asm.Mov.Imm32(dst, int32(in.k)))
	case kLoadMem:
		e.emit(asm.LoadMem(dst, asm.RFP, memOff(in.k), asm.Word))
	case kStore:
		e.emit(asm.StoreMem(asm.RFP, memOff(in.k), dst, asm.Word))
	case kLoadLen:
		e.emit(asm.LoadMem(dst, asm.RFP, offLen, asm.Word))
		if p.hdr > 0 {
			e.emit(asm.Add.Imm32(dst, int32(p.hdr)))
		}
	case kLoadAbs, kLoadMsh:
		dst = regA
		if in.kind == kLoadMsh {
			dst = regX
		}
		if !p.needsBuffer(in) {
			e.headerBytes(dst, in.k, in.size)
		} else {
			e.site(i)
			e.jumpImm(asm.JLT, true, regN, int64(in.k+in.size), labelFail)
			e.emit(loadBytes(dst, asm.RFP, e.bo+int16(in.k), in.size)...)
		}
		if in.kind == kLoadMsh {
			e.emit(asm.And.Imm32(regX, 0xf), asm.LSh.Imm32(regX, 2))
		}
	case kLoadInd:
		e.site(i)
		e.emit(asm.Mov.Reg(asm.R1, regX))
		if in.k > 0 {
			e.emit(asm.Add.Imm(asm.R1, int32(in.k)))
		}
		e.emit(
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Add.Imm(asm.R2, int32(in.size)),
		)
		// The packet's length decides; the second test, never taken,
		// bounds the offset for the verifier.
		e.jumpReg(asm.JGT, true, asm.R2, regN, labelFail)
		e.jumpImm(asm.JGT, true, asm.R1, int64(e.bufLen-in.size), labelFail)
		e.emit(
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Reg(asm.R2, asm.R1),
		)
		e.emit(loadBytes(regA, asm.R2, e.bo, in.size)...)
	case kALU:
		e.alu(in)
	case kNeg:
		e.emit(asm.Neg.Imm32(regA, 0))
	case kTax:
		e.emit(asm.Mov.Reg32(regX, regA))
	case kTxa:
		e.emit(asm.Mov.Reg32(regA, regX))
	case kRet:
		if in.x {
			e.emit(
				asm.Mov.Imm(asm.R0, 0),
				skipImm(asm.JEq, false, regA, 0, 1),
				asm.Mov.Imm(asm.R0, 1),
			)
		} else {
			r := int32(0)
			if in.k != 0 {
				r = 1
			}
			e.emit(asm.Mov.Imm(asm.R0, r))
		}
		e.emit(asm.Return())
	case kJa:
		if t := i + 1 + int(in.k); t != i+1 {
			e.jumpTo(t)
		}
	case kJcond:
		e.jcond(i, in)
	}
}

var aluOps = map[uint16]asm.ALUOp{
	aluADD: asm.Add, aluSUB: asm.Sub, aluMUL: asm.Mul, aluDIV: asm.Div,
	aluOR: asm.Or, aluAND: asm.And, aluLSH: asm.LSh, aluRSH: asm.RSh,
	aluMOD: asm.Mod, aluXOR: asm.Xor,
}

func (e *emitter) alu(in insn) {
	op := aluOps[in.op]
	if !in.x {
		switch {
		case (in.op == aluDIV || in.op == aluMOD) && in.k == 0:
			e.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
		case (in.op == aluLSH || in.op == aluRSH) && in.k >= 32:
			e.emit(asm.Mov.Imm32(regA, 0))
		default:
			e.emit(op.Imm32(regA, int32(in.k)))
		}
		return
	}
	switch in.op {
	case aluDIV, aluMOD:
		e.jumpImm(asm.JEq, false, regX, 0, labelFail)
		e.emit(op.Reg32(regA, regX))
	case aluLSH, aluRSH:
		e.emit(
			skipImm(asm.JLT, false, regX, 32, 2),
			asm.Mov.Imm32(regA, 0),
			asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: 1},
			op.Reg32(regA, regX),
		)
	default:
		e.emit(op.Reg32(regA, regX))
	}
}

var (
	jumpOps = map[uint16]asm.JumpOp{jmpJEQ: asm.JEq, jmpJGT: asm.JGT, jmpJGE: asm.JGE, jmpJSET: asm.JSet}
	// negated jumps; JSET has none
	jumpNeg = map[uint16]asm.JumpOp{jmpJEQ: asm.JNE, jmpJGT: asm.JLE, jmpJGE: asm.JLT}
)

func (e *emitter) jcond(i int, in insn) {
	next := i + 1
	t, f := next+int(in.jt), next+int(in.jf)
	cond := func(op asm.JumpOp, to int) {
		if in.x {
			e.jumpReg(op, false, regA, regX, to)
		} else {
			e.jumpImm(op, false, regA, int64(int32(in.k)), to)
		}
	}
	switch neg, ok := jumpNeg[in.op]; {
	case t == f:
		if t != next {
			e.jumpTo(t)
		}
	case f == next:
		cond(jumpOps[in.op], t)
	case t == next && ok:
		cond(neg, f)
	default:
		cond(jumpOps[in.op], t)
		e.jumpTo(f)
	}
}
