package cbpf

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/net/bpf"
)

// program builds a program that calls the placeholder, followed by the
// placeholder and another subprogram.
func program() *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Name: "prog",
		Type: ebpf.RawTracepoint,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0).WithSymbol("prog"),
			asm.Call.Label("pktfate_filter_l3"),
			asm.Call.Label("other"),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("pktfate_filter_l3"),
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("other"),
			asm.Return(),
		},
		License: "GPL",
	}
}

func TestSplice(t *testing.T) {
	filter, err := Translate([]bpf.RawInstruction{{Op: clsRET | retK, K: 0}}, L3)
	if err != nil {
		t.Fatal(err)
	}
	spec := program()
	if err := Splice(spec, "pktfate_filter_l3", filter); err != nil {
		t.Fatal(err)
	}
	offs, err := spec.Instructions.SymbolOffsets()
	if err != nil {
		t.Fatal(err)
	}
	start, other := offs["pktfate_filter_l3"], offs["other"]
	if start != 4 || other != 4+len(filter) || len(spec.Instructions) != other+2 {
		t.Fatalf("placeholder at %d, other at %d of %d; want 4, %d of %d:\n%v", start, other, len(spec.Instructions), 4+len(filter), 4+len(filter)+2, spec.Instructions)
	}
	for i, ins := range filter {
		got := spec.Instructions[start+i]
		if got.OpCode != ins.OpCode || got.Constant != ins.Constant || got.Offset != ins.Offset || got.Dst != ins.Dst || got.Src != ins.Src {
			t.Errorf("instruction %d: %v, want %v", i, got, ins)
		}
	}
	if filter[0].Symbol() != "" {
		t.Error("Splice changed the caller's filter")
	}
	if refs := spec.Instructions.FunctionReferences(); strings.Join(refs, ",") != "other,pktfate_filter_l3" {
		t.Errorf("calls %v, want other and pktfate_filter_l3", refs)
	}
	// The spliced program still encodes: every call resolves.
	if err := spec.Instructions.Marshal(io.Discard, binary.LittleEndian); err != nil {
		t.Error(err)
	}
	// A second splice replaces the first filter, not the next function.
	if err := Splice(spec, "pktfate_filter_l3", filter[:2]); err != nil {
		t.Fatal(err)
	}
	if offs, _ := spec.Instructions.SymbolOffsets(); offs["other"] != 6 {
		t.Errorf("after a second splice other is at %d, want 6", offs["other"])
	}
}

func TestSpliceErrors(t *testing.T) {
	filter := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	if err := Splice(program(), "nope", filter); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing placeholder: %v, want os.ErrNotExist", err)
	}
	if err := Splice(program(), "prog", filter); err == nil {
		t.Error("splicing over the program itself succeeded")
	}
	if err := Splice(program(), "pktfate_filter_l3", nil); err == nil {
		t.Error("empty filter accepted")
	}
	bad := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return().WithSymbol("x")}
	if err := Splice(program(), "pktfate_filter_l3", bad); err == nil {
		t.Error("filter with a symbol inside accepted")
	}
}

// TestSpliceKeepsBTF checks a placeholder compiled by clang keeps its BTF
// function and line info (the kernel wants both for every subprogram).
func TestSpliceKeepsBTF(t *testing.T) {
	spec, err := loadHarness()
	if err != nil {
		t.Fatal(err)
	}
	filter, err := Translate([]bpf.RawInstruction{{Op: clsLD | szB | modeABS, K: 30}, {Op: clsRET | retA}}, L3)
	if err != nil {
		t.Fatal(err)
	}
	prog := spec.Programs["run_l3"]
	if err := Splice(prog, "pktfate_filter_l3", filter); err != nil {
		t.Fatal(err)
	}
	offs, err := prog.Instructions.SymbolOffsets()
	if err != nil {
		t.Fatal(err)
	}
	first := prog.Instructions[offs["pktfate_filter_l3"]]
	if fn := btf.FuncMetadata(&first); fn == nil || fn.Name != "pktfate_filter_l3" {
		t.Errorf("BTF function %v, want pktfate_filter_l3", fn)
	}
	if first.Source() == nil {
		t.Error("no line info on the spliced function's first instruction")
	}
	n, err := SpliceCollection(spec, "pktfate_filter_l2", filter)
	if err != nil || n != 3 {
		t.Errorf("SpliceCollection: %d programs, %v; want 3", n, err)
	}
}
