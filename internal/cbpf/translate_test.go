package cbpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/net/bpf"

	"github.com/pktfate/pktfate/internal/testutil"
)

// pkt is one packet as a translated filter sees it.
type pkt struct {
	proto uint16 // EtherType, host order (L3)
	data  []byte // from the network header (L3) or the MAC header (L2)
}

// reference runs prog in golang.org/x/net/bpf on the bytes it sees in v:
// pcapfilter.Filter.Match does the same (a synthetic Ethernet header in
// front of L3 data), and Match is what pktfate runs in user space.
func reference(t testing.TB, prog []bpf.RawInstruction, v Variant, p pkt) bool {
	t.Helper()
	insns, ok := bpf.Disassemble(prog)
	if !ok {
		t.Fatalf("x/net/bpf cannot disassemble %v", prog)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("x/net/bpf refuses the program: %v", err)
	}
	in := p.data
	if v == L3 {
		in = make([]byte, 14, 14+len(p.data))
		binary.BigEndian.PutUint16(in[12:], p.proto)
		in = append(in, p.data...)
	}
	n, err := vm.Run(in)
	return err == nil && n > 0
}

// interpret translates prog and runs it in the Go interpreter on p, with
// R2 = R4 = len(p.data) (so "len" is what x/net/bpf sees).
func interpret(t testing.TB, prog []bpf.RawInstruction, v Variant, p pkt) (bool, *interp) {
	t.Helper()
	insns, err := Translate(prog, v)
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	m := &interp{mem: p.data, memBase: interpMemBase}
	r0, err := m.run(insns, interpMemBase, uint64(len(p.data)), uint64(p.proto), uint64(len(p.data)))
	if err != nil {
		t.Fatalf("running the translation: %v\n%v", err, insns)
	}
	if r0 > 1 {
		t.Fatalf("R0 = %d, want 0 or 1", r0)
	}
	return r0 == 1, m
}

func assemble(t testing.TB, insns ...bpf.Instruction) []bpf.RawInstruction {
	t.Helper()
	raw, err := bpf.Assemble(insns)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// retA ends a program returning A, so a test sees A's value through the
// verdict by comparing it first.
func expectA(want uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: want, SkipFalse: 1},
		bpf.RetConstant{Val: 1},
		bpf.RetConstant{Val: 0},
	}
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0x11 + 7*i)
	}
	return b
}

// TestOpcodes runs hand-written programs covering every classic opcode
// class through the translation and through x/net/bpf, in both variants,
// on packets of several lengths, and checks the verdicts agree and (where
// the program states it) are what the program computes.
func TestOpcodes(t *testing.T) {
	data := seq(80)
	data[0] = 0x46 // IPv4, IHL 6: msh gives 24
	progs := []struct {
		name  string
		insns []bpf.Instruction
		// want is the verdict on the full 80-byte packet in L3 and L2
		// (nil: only compare with x/net/bpf)
		want map[Variant]bool
	}{
		{"ret k", []bpf.Instruction{bpf.RetConstant{Val: 0xffff}}, map[Variant]bool{L3: true, L2: true}},
		{"ret 0", []bpf.Instruction{bpf.RetConstant{Val: 0}}, map[Variant]bool{L3: false, L2: false}},
		{"ret a", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegA, Val: 0x80000000}, bpf.RetA{}}, map[Variant]bool{L3: true, L2: true}},
		{"ret a zero", []bpf.Instruction{bpf.RetA{}}, map[Variant]bool{L3: false, L2: false}},
		{"ldh ethertype", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 2}}, expectA(0x86dd)...), map[Variant]bool{L3: true, L2: false}},
		{"ldb header", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 13, Size: 1}}, expectA(0xdd)...), map[Variant]bool{L3: true, L2: false}},
		{"ldb header hi", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 1}}, expectA(0x86)...), map[Variant]bool{L3: true, L2: false}},
		{"ldh header 11", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 11, Size: 2}}, expectA(0x86)...), map[Variant]bool{L3: true, L2: false}},
		{"ld header 10", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 10, Size: 4}}, expectA(0x86dd)...), map[Variant]bool{L3: true, L2: false}},
		{"ld header 9", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 9, Size: 4}}, expectA(0x86)...), map[Variant]bool{L3: true, L2: false}},
		{"ld zero mac", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}}, expectA(0)...), map[Variant]bool{L3: true, L2: false}},
		{"ld straddle", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 4}}, expectA(0x86dd0000|uint32(data[0])<<8|uint32(data[1]))...), map[Variant]bool{L3: true, L2: false}},
		{"ldh straddle", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 13, Size: 2}}, expectA(0xdd00|uint32(data[0]))...), map[Variant]bool{L3: true, L2: false}},
		{"ld aligned", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 26, Size: 4}}, expectA(binary.BigEndian.Uint32(data[12:]))...), map[Variant]bool{L3: true, L2: false}},
		{"ld unaligned", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 27, Size: 4}}, expectA(binary.BigEndian.Uint32(data[13:]))...), map[Variant]bool{L3: true, L2: false}},
		{"ldh unaligned", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 15, Size: 2}}, expectA(uint32(binary.BigEndian.Uint16(data[1:])))...), map[Variant]bool{L3: true, L2: false}},
		{"ldb data", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 20, Size: 1}}, expectA(uint32(data[20]))...), map[Variant]bool{L3: false, L2: true}},
		{"ld last bytes", []bpf.Instruction{bpf.LoadAbsolute{Off: 14 + 76, Size: 4}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: true, L2: false}},
		{"ld past end", []bpf.Instruction{bpf.LoadAbsolute{Off: 14 + 77, Size: 4}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"ld far past end", []bpf.Instruction{bpf.LoadAbsolute{Off: 100000, Size: 1}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"msh data", []bpf.Instruction{bpf.LoadMemShift{Off: 14}, bpf.TXA{}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 24, SkipFalse: 1}, bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0}}, map[Variant]bool{L3: true, L2: false}},
		{"msh header", []bpf.Instruction{bpf.LoadMemShift{Off: 12}, bpf.TXA{}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 24, SkipFalse: 1}, bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0}}, map[Variant]bool{L3: true, L2: false}},
		{"msh past end", []bpf.Instruction{bpf.LoadMemShift{Off: 200}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"ind msh", append([]bpf.Instruction{bpf.LoadMemShift{Off: 14}, bpf.LoadIndirect{Off: 16, Size: 2}}, expectA(uint32(binary.BigEndian.Uint16(data[26:])))...), map[Variant]bool{L3: true, L2: false}},
		{"ind header", append([]bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 2}, bpf.LoadIndirect{Off: 10, Size: 2}}, expectA(0x86dd)...), map[Variant]bool{L3: true, L2: false}},
		{"ind straddle", append([]bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 3}, bpf.LoadIndirect{Off: 10, Size: 4}}, expectA(0xdd000000|uint32(data[0])<<16|uint32(data[1])<<8|uint32(data[2]))...), map[Variant]bool{L3: true, L2: false}},
		{"ind byte", append([]bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 7}, bpf.LoadIndirect{Off: 20, Size: 1}}, expectA(uint32(data[13]))...), map[Variant]bool{L3: true, L2: false}},
		{"ind word", append([]bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 5}, bpf.LoadIndirect{Off: 20, Size: 4}}, expectA(binary.BigEndian.Uint32(data[11:]))...), map[Variant]bool{L3: true, L2: false}},
		{"ind from packet", []bpf.Instruction{bpf.LoadAbsolute{Off: 14, Size: 1}, bpf.TAX{}, bpf.LoadIndirect{Off: 0, Size: 1}, bpf.RetA{}}, nil},
		{"ind last byte", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 93}, bpf.LoadIndirect{Off: 0, Size: 1}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: true, L2: false}},
		{"ind past end", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 91}, bpf.LoadIndirect{Off: 0, Size: 4}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"ind huge x", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 0xffffffff}, bpf.LoadIndirect{Off: 2, Size: 1}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"ind far k", []bpf.Instruction{bpf.LoadIndirect{Off: 5000, Size: 1}, bpf.RetConstant{Val: 1}}, map[Variant]bool{L3: false, L2: false}},
		{"len", append([]bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtLen}}, expectA(94)...), map[Variant]bool{L3: true, L2: false}},
		{"scratch", []bpf.Instruction{
			bpf.LoadConstant{Dst: bpf.RegA, Val: 7}, bpf.StoreScratch{Src: bpf.RegA, N: 3},
			bpf.LoadConstant{Dst: bpf.RegX, Val: 9}, bpf.StoreScratch{Src: bpf.RegX, N: 15},
			bpf.LoadScratch{Dst: bpf.RegX, N: 3}, bpf.LoadScratch{Dst: bpf.RegA, N: 15},
			bpf.ALUOpX{Op: bpf.ALUOpMul},         // 63
			bpf.LoadScratch{Dst: bpf.RegX, N: 0}, // never written: 0
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
		}, nil},
		{"tax txa", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegA, Val: 5}, bpf.TAX{}, bpf.LoadConstant{Dst: bpf.RegA, Val: 0}, bpf.TXA{}, bpf.RetA{}}, map[Variant]bool{L3: true, L2: true}},
	}
	// The scratch program's tail checks A.
	for i := range progs {
		if progs[i].name == "scratch" {
			progs[i].insns = append(progs[i].insns, expectA(63)...)
			progs[i].want = map[Variant]bool{L3: true, L2: true}
		}
	}
	lengths := []int{80, 0, 1, 13, 14, 27, 40}
	for _, tc := range progs {
		t.Run(tc.name, func(t *testing.T) {
			prog := assemble(t, tc.insns...)
			for _, v := range []Variant{L3, L2} {
				p := pkt{proto: 0x86dd, data: data}
				got, _ := interpret(t, prog, v, p)
				if want, ok := tc.want[v]; ok && got != want {
					t.Errorf("%s: got %v, want %v", v, got, want)
				}
				for _, n := range lengths {
					p := pkt{proto: 0x86dd, data: data[:n]}
					got, _ := interpret(t, prog, v, p)
					if ref := reference(t, prog, v, p); got != ref {
						t.Errorf("%s, %d bytes: got %v, x/net/bpf %v", v, n, got, ref)
					}
				}
			}
		})
	}
}

// TestALU checks every ALU operation, with K and with X, against x/net/bpf
// over operands that include 0, 1, 31, 32 and the extremes.
func TestALU(t *testing.T) {
	ops := []bpf.ALUOp{bpf.ALUOpAdd, bpf.ALUOpSub, bpf.ALUOpMul, bpf.ALUOpDiv, bpf.ALUOpOr,
		bpf.ALUOpAnd, bpf.ALUOpShiftLeft, bpf.ALUOpShiftRight, bpf.ALUOpMod, bpf.ALUOpXor}
	vals := []uint32{0, 1, 2, 3, 7, 31, 32, 33, 255, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff}
	for _, op := range ops {
		for _, a := range vals {
			for _, b := range vals {
				var want uint32
				switch op {
				case bpf.ALUOpAdd:
					want = a + b
				case bpf.ALUOpSub:
					want = a - b
				case bpf.ALUOpMul:
					want = a * b
				case bpf.ALUOpDiv:
					if b != 0 {
						want = a / b
					}
				case bpf.ALUOpMod:
					if b != 0 {
						want = a % b
					}
				case bpf.ALUOpOr:
					want = a | b
				case bpf.ALUOpAnd:
					want = a & b
				case bpf.ALUOpXor:
					want = a ^ b
				case bpf.ALUOpShiftLeft:
					want = a << b
				case bpf.ALUOpShiftRight:
					want = a >> b
				}
				divZero := b == 0 && (op == bpf.ALUOpDiv || op == bpf.ALUOpMod)
				// A with X: the result is A, tested against want, and a
				// division by zero never matches.
				withX := append([]bpf.Instruction{
					bpf.LoadConstant{Dst: bpf.RegA, Val: a},
					bpf.LoadConstant{Dst: bpf.RegX, Val: b},
					bpf.ALUOpX{Op: op},
				}, expectA(want)...)
				progs := [][]bpf.RawInstruction{assemble(t, withX...)}
				if !divZero {
					progs = append(progs, assemble(t, append([]bpf.Instruction{
						bpf.LoadConstant{Dst: bpf.RegA, Val: a},
						bpf.ALUOpConstant{Op: op, Val: b},
					}, expectA(want)...)...))
				} else {
					// x/net/bpf refuses a constant zero divisor; the
					// translation ends the program with no match.
					raw := assemble(t, bpf.LoadConstant{Dst: bpf.RegA, Val: a}, bpf.ALUOpConstant{Op: op, Val: 1}, bpf.RetConstant{Val: 1})
					raw[1].K = 0
					for _, v := range []Variant{L3, L2} {
						if got, _ := interpret(t, raw, v, pkt{}); got {
							t.Errorf("%v %d / 0 (K) matched", op, a)
						}
					}
				}
				for _, prog := range progs {
					for _, v := range []Variant{L3, L2} {
						got, _ := interpret(t, prog, v, pkt{})
						ref := reference(t, prog, v, pkt{})
						if got != ref || got == divZero {
							t.Errorf("%s: %#x op%#x %#x: got %v, x/net/bpf %v (want A = %#x)", v, a, op, b, got, ref, want)
						}
					}
				}
			}
		}
	}
}

// TestNeg checks A = -A, which x/net/bpf does not run.
func TestNeg(t *testing.T) {
	for _, a := range []uint32{0, 1, 5, 0x80000000, 0xffffffff} {
		prog := assemble(t, append([]bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegA, Val: a}, bpf.NegateA{}}, expectA(-a)...)...)
		for _, v := range []Variant{L3, L2} {
			if got, _ := interpret(t, prog, v, pkt{}); !got {
				t.Errorf("%s: -%#x is not %#x", v, a, -a)
			}
		}
	}
}

// TestLoadXLen checks ldx len, which x/net/bpf decodes as ld len.
func TestLoadXLen(t *testing.T) {
	raw := assemble(t, bpf.LoadConstant{Dst: bpf.RegX, Val: 0}, bpf.TXA{}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1}, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 1})
	raw[0] = bpf.RawInstruction{Op: clsLDX | szW | modeLEN}
	raw[2].K = 14 + 5
	if got, _ := interpret(t, raw, L3, pkt{data: seq(5)}); got {
		t.Error("L3: X = len gave 19")
	}
	raw[2].K = 5
	if got, _ := interpret(t, raw, L2, pkt{data: seq(5)}); got {
		t.Error("L2: X = len gave 5")
	}
	raw[2].K = 6
	if got, _ := interpret(t, raw, L2, pkt{data: seq(5)}); !got {
		t.Error("L2: X = len of 5 bytes was 6")
	}
}

// TestJumps checks every conditional jump with K and X, with the true or
// the false branch falling through or both jumping.
func TestJumps(t *testing.T) {
	conds := []bpf.JumpTest{bpf.JumpEqual, bpf.JumpNotEqual, bpf.JumpGreaterThan, bpf.JumpLessThan,
		bpf.JumpGreaterOrEqual, bpf.JumpLessOrEqual, bpf.JumpBitsSet, bpf.JumpBitsNotSet}
	vals := []uint32{0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff}
	for _, c := range conds {
		for _, a := range vals {
			for _, k := range vals {
				for _, skips := range [][2]uint8{{0, 1}, {1, 0}, {1, 2}, {2, 1}, {2, 2}} {
					tail := []bpf.Instruction{bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 7}}
					for _, x := range []bool{false, true} {
						insns := []bpf.Instruction{
							bpf.LoadConstant{Dst: bpf.RegA, Val: a},
							bpf.LoadConstant{Dst: bpf.RegX, Val: k},
						}
						if x {
							insns = append(insns, bpf.JumpIfX{Cond: c, SkipTrue: skips[0], SkipFalse: skips[1]})
						} else {
							insns = append(insns, bpf.JumpIf{Cond: c, Val: k, SkipTrue: skips[0], SkipFalse: skips[1]})
						}
						prog := assemble(t, append(insns, tail...)...)
						got, _ := interpret(t, prog, L2, pkt{})
						if ref := reference(t, prog, L2, pkt{}); got != ref {
							t.Errorf("%v x=%v a=%#x k=%#x skips %v: got %v, x/net/bpf %v", c, x, a, k, skips, got, ref)
						}
					}
				}
			}
		}
	}
	// ja over instructions, and to the next one.
	prog := assemble(t, bpf.Jump{Skip: 2}, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 0}, bpf.Jump{Skip: 0}, bpf.RetConstant{Val: 1})
	if got, _ := interpret(t, prog, L2, pkt{}); !got {
		t.Error("ja: did not reach ret #1")
	}
}

// TestOneRead checks the packet is read at most once, and not at all on
// paths that load nothing past the synthetic header.
func TestOneRead(t *testing.T) {
	// ldh [12]; jeq #0x800 ... : IPv4 reads, ARP does not. Both paths then
	// meet at an indexed load (read on some paths only: a flagged read).
	prog := assemble(t,
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 1},
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.LoadConstant{Dst: bpf.RegX, Val: 1},
		bpf.LoadIndirect{Off: 14, Size: 1},
		bpf.RetA{},
	)
	data := seq(40)
	for _, tc := range []struct {
		proto uint16
		reads int
	}{{0x0800, 1}, {0x0806, 1}} {
		p := pkt{proto: tc.proto, data: data}
		got, m := interpret(t, prog, L3, p)
		if ref := reference(t, prog, L3, p); got != ref {
			t.Errorf("proto %#x: got %v, x/net/bpf %v", tc.proto, got, ref)
		}
		if m.reads != tc.reads {
			t.Errorf("proto %#x: %d reads, want %d", tc.proto, m.reads, tc.reads)
		}
	}
	arp := assemble(t, bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipFalse: 1}, bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0})
	for _, proto := range []uint16{0x0806, 0x0800} {
		got, m := interpret(t, arp, L3, pkt{proto: proto, data: data})
		if got != (proto == 0x0806) || m.reads != 0 {
			t.Errorf("arp on %#x: match %v with %d reads, want %v with none", proto, got, m.reads, proto == 0x0806)
		}
	}
}

// TestReadFails checks a failed bpf_probe_read_kernel counts as no bytes.
func TestReadFails(t *testing.T) {
	prog := assemble(t, bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 2},
		bpf.LoadAbsolute{Off: 14, Size: 1}, bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0})
	insns, err := Translate(prog, L3)
	if err != nil {
		t.Fatal(err)
	}
	m := &interp{mem: seq(20), memBase: interpMemBase}
	// The address is not readable: the load fails, no match.
	r0, err := m.run(insns, 0x42, 20, 0x0800, 20)
	if err != nil || r0 != 0 || m.reads != 1 {
		t.Errorf("unreadable address: R0 %d, %d reads, %v; want 0 after one read", r0, m.reads, err)
	}
	r0, err = m.run(insns, interpMemBase, 20, 0x0800, 20)
	if err != nil || r0 != 1 {
		t.Errorf("readable address: R0 %d, %v; want 1", r0, err)
	}
}

// TestClamp checks R2 beyond MaxLen is clamped: bytes past MaxLen are not
// there, whatever the caller says.
func TestClamp(t *testing.T) {
	data := seq(400)
	last := assemble(t, bpf.LoadConstant{Dst: bpf.RegX, Val: 0}, bpf.LoadIndirect{Off: 14 + MaxLen - 1, Size: 1}, bpf.RetConstant{Val: 1})
	past := assemble(t, bpf.LoadConstant{Dst: bpf.RegX, Val: 0}, bpf.LoadIndirect{Off: 14 + MaxLen, Size: 1}, bpf.RetConstant{Val: 1})
	pastAbs := assemble(t, bpf.LoadAbsolute{Off: 14 + MaxLen, Size: 1}, bpf.RetConstant{Val: 1})
	for _, tc := range []struct {
		name string
		prog []bpf.RawInstruction
		want bool
	}{{"last byte", last, true}, {"past MaxLen", past, false}, {"past MaxLen, constant", pastAbs, false}} {
		insns, err := Translate(tc.prog, L3)
		if err != nil {
			t.Fatal(err)
		}
		m := &interp{mem: data, memBase: interpMemBase}
		r0, err := m.run(insns, interpMemBase, uint64(len(data)), 0x0800, uint64(len(data)))
		if err != nil || (r0 == 1) != tc.want {
			t.Errorf("%s: R0 %d, %v; want match %v", tc.name, r0, err, tc.want)
		}
	}
}

func TestUnsupported(t *testing.T) {
	ret := bpf.RawInstruction{Op: clsRET | retK, K: 1}
	big := make([]bpf.RawInstruction, maxClassicInsns+1)
	for i := range big {
		big[i] = ret
	}
	for _, tc := range []struct {
		name string
		prog []bpf.RawInstruction
	}{
		{"empty", nil},
		{"too long", big},
		{"ld #ifidx", []bpf.RawInstruction{{Op: clsLD | szW | modeABS, K: 0xfffff000 + 8}, ret}},
		{"ld #proto", []bpf.RawInstruction{{Op: clsLD | szH | modeABS, K: 0xfffff000}, ret}},
		{"SKF_NET_OFF", []bpf.RawInstruction{{Op: clsLD | szB | modeABS, K: 0xfff00000}, ret}},
		{"backward jump", []bpf.RawInstruction{{Op: clsLD | szW | modeIMM, K: 1}, {Op: clsJMP | jmpJA, K: 0xfffffffe}, ret}},
		{"jump past end", []bpf.RawInstruction{{Op: clsJMP | jmpJEQ, Jt: 0, Jf: 5}, ret}},
		{"falls off the end", []bpf.RawInstruction{{Op: clsLD | szW | modeIMM, K: 1}}},
		{"bad opcode", []bpf.RawInstruction{{Op: 0xff}, ret}},
		{"wide opcode", []bpf.RawInstruction{{Op: 0x106}, ret}},
		{"ld mem 16", []bpf.RawInstruction{{Op: clsLD | szW | modeMEM, K: 16}, ret}},
		{"st 16", []bpf.RawInstruction{{Op: clsST, K: 16}, ret}},
		{"ldh imm", []bpf.RawInstruction{{Op: clsLD | szH | modeIMM, K: 1}, ret}},
		{"ldx msh word", []bpf.RawInstruction{{Op: clsLDX | szW | modeMSH, K: 1}, ret}},
		{"ret x", []bpf.RawInstruction{{Op: clsRET | 0x08}}},
		{"neg x", []bpf.RawInstruction{{Op: clsALU | aluNEG | srcX}, ret}},
	} {
		_, err := Translate(tc.prog, L3)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", tc.name, err)
		}
	}
	if _, err := Translate([]bpf.RawInstruction{ret}, Variant(7)); err == nil {
		t.Error("unknown variant accepted")
	}
}

// TestUnreachable checks instructions no path reaches are not emitted
// (the verifier refuses unreachable code), including those only reachable
// after a load that always fails.
func TestUnreachable(t *testing.T) {
	prog := assemble(t,
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x800, SkipTrue: 0, SkipFalse: 0},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 5}, // unreachable
		bpf.LoadAbsolute{Off: 1 << 20, Size: 1},
		bpf.RetConstant{Val: 1}, // unreachable: the load always fails
	)
	for _, v := range []Variant{L3, L2} {
		insns, err := Translate(prog, v)
		if err != nil {
			t.Fatal(err)
		}
		if reached := reachable(insns); reached != len(insns) {
			t.Errorf("%s: %d of %d instructions reachable:\n%v", v, reached, len(insns), insns)
		}
		// Every path ends in the failing load: nothing may return a match.
		for _, ins := range insns {
			if ins.OpCode == asm.Mov.Op(asm.ImmSource) && ins.Dst == asm.R0 && ins.Constant != 0 {
				t.Errorf("%s: an unreachable return was emitted:\n%v", v, insns)
			}
		}
	}
}

// reachable counts the instructions reachable from the first in the
// control-flow graph, as the verifier's check_cfg does.
func reachable(insns asm.Instructions) int {
	seen := make([]bool, len(insns))
	var walk func(int)
	walk = func(i int) {
		if i >= len(insns) || seen[i] {
			return
		}
		seen[i] = true
		ins := insns[i]
		op := ins.OpCode
		if op.Class().IsJump() {
			switch op.JumpOp() {
			case asm.Exit:
				return
			case asm.Call:
			case asm.Ja:
				walk(i + 1 + int(ins.Offset))
				return
			default:
				walk(i + 1 + int(ins.Offset))
			}
		}
		walk(i + 1)
	}
	walk(0)
	n := 0
	for _, s := range seen {
		if s {
			n++
		}
	}
	return n
}

// TestRandomPrograms translates random valid classic programs (every
// opcode x/net/bpf runs, forward jumps, loads near and past the packet's
// end) and compares the interpreter's verdicts with x/net/bpf's.
func TestRandomPrograms(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() || testutil.InVM() != "" {
		// The interpreter does not depend on the kernel: the matrix's
		// slow VMs run a sample.
		n = 300
	}
	for i := 0; i < n; i++ {
		prog := randomProgram(rng, 2+rng.IntN(30))
		for _, v := range []Variant{L3, L2} {
			if _, err := Translate(prog, v); err != nil {
				t.Fatalf("program %d: %v\n%v", i, err, prog)
			}
			for j := 0; j < 8; j++ {
				p := randomPacket(rng)
				got, _ := interpret(t, prog, v, p)
				if ref := reference(t, prog, v, p); got != ref {
					t.Fatalf("program %d, %s, packet %x (proto %#x): got %v, x/net/bpf %v\n%s", i, v, p.data, p.proto, got, ref, disasm(prog))
				}
			}
		}
	}
}

func disasm(prog []bpf.RawInstruction) string {
	insns, _ := bpf.Disassemble(prog)
	s := ""
	for i, in := range insns {
		s += fmt.Sprintf("%3d: %v\n", i, in)
	}
	return s
}

func randomPacket(rng *rand.Rand) pkt {
	protos := []uint16{0x0800, 0x86dd, 0x0806, 0x8100, uint16(rng.Uint32())}
	n := rng.IntN(100)
	if rng.IntN(8) == 0 {
		n = rng.IntN(MaxLen + 1)
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
		if rng.IntN(3) == 0 {
			data[i] = byte(rng.IntN(8)) // small values make jumps on them interesting
		}
	}
	return pkt{proto: protos[rng.IntN(len(protos))], data: data}
}

// randomProgram builds n instructions x/net/bpf accepts and runs (no
// negation, no ldx len), ending in returns.
func randomProgram(rng *rand.Rand, n int) []bpf.RawInstruction {
	prog := make([]bpf.RawInstruction, 0, n+2)
	off := func() uint32 {
		switch rng.IntN(10) {
		case 0:
			return rng.Uint32() % 400
		case 1:
			return uint32(rng.IntN(16))
		}
		return uint32(rng.IntN(70))
	}
	k := func() uint32 {
		switch rng.IntN(4) {
		case 0:
			return rng.Uint32()
		case 1:
			return uint32(rng.IntN(40))
		}
		return uint32(rng.IntN(8))
	}
	sizes := []uint16{szW, szH, szB}
	aluOpsK := []uint16{aluADD, aluSUB, aluMUL, aluDIV, aluOR, aluAND, aluLSH, aluRSH, aluMOD, aluXOR}
	jmps := []uint16{jmpJEQ, jmpJGT, jmpJGE, jmpJSET}
	for i := 0; i < n; i++ {
		left := n - i // instructions after this one, before the final two returns
		var ri bpf.RawInstruction
		switch rng.IntN(14) {
		case 0:
			ri = bpf.RawInstruction{Op: clsLD | szW | modeIMM, K: k()}
		case 1:
			ri = bpf.RawInstruction{Op: clsLDX | szW | modeIMM, K: k()}
		case 2, 3:
			ri = bpf.RawInstruction{Op: clsLD | sizes[rng.IntN(3)] | modeABS, K: off()}
		case 4:
			ri = bpf.RawInstruction{Op: clsLD | sizes[rng.IntN(3)] | modeIND, K: off()}
		case 5:
			ri = bpf.RawInstruction{Op: clsLDX | szB | modeMSH, K: off()}
		case 6:
			ri = bpf.RawInstruction{Op: clsLD | szW | modeLEN}
		case 7:
			ri = bpf.RawInstruction{Op: []uint16{clsLD | szW | modeMEM, clsLDX | szW | modeMEM, clsST, clsSTX}[rng.IntN(4)], K: uint32(rng.IntN(16))}
		case 8, 9:
			op := aluOpsK[rng.IntN(len(aluOpsK))]
			if rng.IntN(2) == 0 {
				ri = bpf.RawInstruction{Op: clsALU | op | srcX}
			} else {
				kk := k()
				if (op == aluDIV || op == aluMOD) && kk == 0 {
					kk = 3
				}
				ri = bpf.RawInstruction{Op: clsALU | op | srcK, K: kk}
			}
		case 10:
			ri = bpf.RawInstruction{Op: []uint16{clsMISC | miscTAX, clsMISC | miscTXA}[rng.IntN(2)]}
		case 11, 12:
			src := uint16(srcK)
			if rng.IntN(3) == 0 {
				src = srcX
			}
			ri = bpf.RawInstruction{Op: clsJMP | jmps[rng.IntN(4)] | src, K: k(),
				Jt: uint8(rng.IntN(min(left+1, 256))), Jf: uint8(rng.IntN(min(left+1, 256)))}
		case 13:
			if rng.IntN(2) == 0 {
				ri = bpf.RawInstruction{Op: clsJMP | jmpJA, K: uint32(rng.IntN(left + 1))}
			} else {
				ri = bpf.RawInstruction{Op: clsRET | retA}
			}
		}
		prog = append(prog, ri)
	}
	return append(prog, bpf.RawInstruction{Op: clsRET | retA}, bpf.RawInstruction{Op: clsRET | retK, K: 1})
}

// TestStack checks the translation's frame stays within MaxStack, with the
// largest buffer (an indexed load through X from packet data), scratch
// memory and every fixed slot in use.
func TestStack(t *testing.T) {
	worst := assemble(t,
		bpf.LoadExtension{Num: bpf.ExtLen}, bpf.StoreScratch{Src: bpf.RegA, N: 15},
		bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.LoadAbsolute{Off: 12, Size: 4},
		bpf.LoadAbsolute{Off: 40, Size: 1}, bpf.TAX{}, bpf.LoadIndirect{Off: 0, Size: 4},
		bpf.LoadScratch{Dst: bpf.RegX, N: 15}, bpf.RetA{})
	rng := rand.New(rand.NewPCG(3, 4))
	progs := [][]bpf.RawInstruction{worst}
	for range 500 {
		progs = append(progs, randomProgram(rng, 2+rng.IntN(30)))
	}
	deepest := 0
	for _, prog := range progs {
		for _, v := range []Variant{L3, L2} {
			insns, err := Translate(prog, v)
			if err != nil {
				t.Fatal(err)
			}
			for _, ins := range insns {
				off := 0
				switch {
				case ins.OpCode.Class().IsLoad() && ins.Src == asm.RFP,
					ins.OpCode.Class().IsStore() && ins.Dst == asm.RFP:
					off = int(ins.Offset)
				case ins.OpCode.Class().IsLoad() && ins.Src == asm.R2:
					off = int(ins.Offset) // the buffer's start, indexed by R1
				}
				deepest = min(deepest, off)
			}
		}
	}
	if -deepest > MaxStack {
		t.Errorf("the translation reaches %d bytes below the frame, more than MaxStack (%d)", -deepest, MaxStack)
	}
	if -deepest < MaxStack-16 {
		t.Errorf("the deepest frame is %d bytes: MaxStack (%d) promises too much, or the worst case no longer is", -deepest, MaxStack)
	}
}
