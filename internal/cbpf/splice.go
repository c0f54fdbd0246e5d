package cbpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Splice replaces the body of the subprogram named symbol in spec (the
// placeholder, see the package documentation) with filter, as Translate
// returns it. The subprogram keeps its symbol, so the program's calls still
// resolve, and its BTF function and first line info, which the kernel
// needs for every subprogram of a program loaded with BTF.
//
// The error wraps os.ErrNotExist when spec has no such subprogram (the
// program does not call it). spec must not be loaded concurrently.
func Splice(spec *ebpf.ProgramSpec, symbol string, filter asm.Instructions) error {
	insns, err := splice(spec.Instructions, symbol, filter)
	if err != nil {
		return fmt.Errorf("splicing filter into program %s: %w", spec.Name, err)
	}
	spec.Instructions = insns
	return nil
}

// SpliceCollection splices filter into every program of spec that calls
// the subprogram named symbol, and returns how many it changed.
func SpliceCollection(spec *ebpf.CollectionSpec, symbol string, filter asm.Instructions) (int, error) {
	n := 0
	for _, prog := range spec.Programs {
		err := Splice(prog, symbol, filter)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func splice(insns asm.Instructions, symbol string, filter asm.Instructions) (asm.Instructions, error) {
	if symbol == "" {
		return nil, errors.New("empty placeholder symbol")
	}
	if len(filter) == 0 {
		return nil, errors.New("empty filter")
	}
	for i, ins := range filter {
		if ins.Symbol() != "" {
			return nil, fmt.Errorf("filter instruction %d has symbol %q: a symbol starts a new function", i, ins.Symbol())
		}
	}
	start := -1
	for i, ins := range insns {
		if ins.Symbol() == symbol {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no subprogram %s: %w", symbol, os.ErrNotExist)
	}
	if start == 0 {
		return nil, fmt.Errorf("%s is the program itself, not a subprogram", symbol)
	}
	end := len(insns)
	for i := start + 1; i < len(insns); i++ {
		if insns[i].Symbol() != "" {
			end = i
			break
		}
	}

	old := insns[start]
	body := make(asm.Instructions, len(filter))
	copy(body, filter)
	first := body[0].WithSymbol(symbol)
	if fn := btf.FuncMetadata(&old); fn != nil {
		first = btf.WithFuncMetadata(first, fn)
	}
	if src := old.Source(); src != nil {
		first = first.WithSource(src)
	}
	body[0] = first

	out := make(asm.Instructions, 0, start+len(body)+len(insns)-end)
	out = append(out, insns[:start]...)
	out = append(out, body...)
	out = append(out, insns[end:]...)
	return out, nil
}
