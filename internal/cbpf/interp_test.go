package cbpf

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf/asm"
)

// interp runs a translated subprogram in Go, with the semantics the
// kernel's eBPF interpreter gives the instructions Translate emits, so the
// translator's unit tests need no kernel. The kernel tests run the same
// programs for real.
type interp struct {
	// mem is readable kernel memory at address memBase, what
	// bpf_probe_read_kernel may copy from.
	mem     []byte
	memBase uint64
	// steps counts executed instructions (the subprogram has no loops).
	steps int
	reads int // bpf_probe_read_kernel calls
}

const (
	interpStackTop = 0x7000_0000
	interpMemBase  = 0x1000_0000
)

// run executes insns with R1..R4 and returns R0.
func (m *interp) run(insns asm.Instructions, r1, r2, r3, r4 uint64) (uint64, error) {
	var r [11]uint64
	var stack [512]byte
	r[1], r[2], r[3], r[4] = r1, r2, r3, r4
	r[10] = interpStackTop
	stackAt := func(addr uint64, n int) ([]byte, error) {
		lo := uint64(interpStackTop - len(stack))
		if addr < lo || addr+uint64(n) > interpStackTop {
			return nil, fmt.Errorf("access of %d bytes at %#x outside the stack", n, addr)
		}
		if addr%uint64(n) != 0 && n <= 8 {
			// The verifier wants aligned stack accesses; the tests
			// check that Translate honours it.
			return nil, fmt.Errorf("misaligned stack access of %d bytes at %#x", n, addr)
		}
		return stack[addr-lo : addr-lo+uint64(n)], nil
	}
	for pc := 0; pc < len(insns); pc++ {
		m.steps++
		if m.steps > 1<<20 {
			return 0, fmt.Errorf("too many steps")
		}
		ins := insns[pc]
		op := ins.OpCode
		cls := op.Class()
		switch {
		case cls.IsALU():
			wide := cls == asm.ALU64Class
			src := uint64(ins.Constant)
			if !wide {
				src = uint64(uint32(ins.Constant))
			}
			if op.Source() == asm.RegSource {
				src = r[ins.Src]
			}
			d := r[ins.Dst]
			if !wide {
				d = uint64(uint32(d))
				src = uint64(uint32(src))
			}
			var v uint64
			switch op.ALUOp() {
			case asm.Add:
				v = d + src
			case asm.Sub:
				v = d - src
			case asm.Mul:
				v = d * src
			case asm.Div:
				if src != 0 {
					v = d / src
				}
			case asm.Mod:
				v = d
				if src != 0 {
					v = d % src
				}
			case asm.Or:
				v = d | src
			case asm.And:
				v = d & src
			case asm.Xor:
				v = d ^ src
			case asm.LSh:
				if wide {
					v = d << (src & 63)
				} else {
					v = d << (src & 31)
				}
			case asm.RSh:
				if wide {
					v = d >> (src & 63)
				} else {
					v = d >> (src & 31)
				}
			case asm.Neg:
				v = -d
			case asm.Mov:
				v = src
			case asm.Swap:
				if wide || op.Endianness() != asm.BE {
					return 0, fmt.Errorf("pc %d: unexpected byte swap %v", pc, ins)
				}
				switch ins.Constant {
				case 16:
					v = uint64(bits.ReverseBytes16(uint16(d)))
				case 32:
					v = uint64(bits.ReverseBytes32(uint32(d)))
				case 64:
					v = bits.ReverseBytes64(r[ins.Dst])
				}
				r[ins.Dst] = v
				continue
			default:
				return 0, fmt.Errorf("pc %d: unexpected ALU op %v", pc, ins)
			}
			if !wide {
				v = uint64(uint32(v))
			}
			r[ins.Dst] = v
		case cls.IsJump():
			jop := op.JumpOp()
			switch jop {
			case asm.Exit:
				return r[0], nil
			case asm.Call:
				if ins.Constant != int64(asm.FnProbeReadKernel) {
					return 0, fmt.Errorf("pc %d: unexpected call %v", pc, ins)
				}
				m.reads++
				dst, n, src := r[1], r[2], r[3]
				lo := uint64(interpStackTop - len(stack))
				if dst < lo || n > 512 || dst+n > interpStackTop {
					return 0, fmt.Errorf("pc %d: probe read of %d bytes into %#x leaves the stack", pc, n, dst)
				}
				buf := stack[dst-lo : dst-lo+n]
				if src >= m.memBase && src+n <= m.memBase+uint64(len(m.mem)) && src+n >= src {
					copy(buf, m.mem[src-m.memBase:])
					r[0] = 0
				} else {
					clear(buf)
					r[0] = uint64(^uint64(13)) // -EFAULT
				}
				for i := 1; i <= 5; i++ {
					r[i] = 0xdead_beef_dead_beef // clobbered
				}
				continue
			}
			wide := cls == asm.JumpClass
			src := uint64(ins.Constant)
			if op.Source() == asm.RegSource {
				src = r[ins.Src]
			}
			d := r[ins.Dst]
			if !wide {
				d, src = uint64(uint32(d)), uint64(uint32(src))
			}
			var taken bool
			switch jop {
			case asm.Ja:
				taken = true
			case asm.JEq:
				taken = d == src
			case asm.JNE:
				taken = d != src
			case asm.JGT:
				taken = d > src
			case asm.JGE:
				taken = d >= src
			case asm.JLT:
				taken = d < src
			case asm.JLE:
				taken = d <= src
			case asm.JSet:
				taken = d&src != 0
			default:
				return 0, fmt.Errorf("pc %d: unexpected jump %v", pc, ins)
			}
			if taken {
				if ins.Offset < 0 {
					return 0, fmt.Errorf("pc %d: backward jump", pc)
				}
				pc += int(ins.Offset)
			}
		case cls == asm.LdXClass:
			n := ins.OpCode.Size().Sizeof()
			b, err := stackAt(r[ins.Src]+uint64(int64(ins.Offset)), n)
			if err != nil {
				return 0, fmt.Errorf("pc %d: %v: %w", pc, ins, err)
			}
			r[ins.Dst] = leUint(b)
		case cls == asm.StXClass || cls == asm.StClass:
			n := ins.OpCode.Size().Sizeof()
			b, err := stackAt(r[ins.Dst]+uint64(int64(ins.Offset)), n)
			if err != nil {
				return 0, fmt.Errorf("pc %d: %v: %w", pc, ins, err)
			}
			v := uint64(ins.Constant)
			if cls == asm.StXClass {
				v = r[ins.Src]
			}
			putLE(b, v)
		default:
			return 0, fmt.Errorf("pc %d: unexpected instruction %v", pc, ins)
		}
	}
	return 0, fmt.Errorf("fell off the end")
}

func leUint(b []byte) uint64 {
	var buf [8]byte
	copy(buf[:], b)
	return binary.LittleEndian.Uint64(buf[:])
}

func putLE(b []byte, v uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	copy(b, buf[:len(b)])
}
