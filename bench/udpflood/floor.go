package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// floorTPs is -floor: the tracepoints that get an empty program of the same
// kind as pktfate's (tp_btf) in a third flood of each round. What the
// sender's CPU spends in them is what any BPF program on these tracepoints
// costs before its first instruction does anything: the kernel's dispatch
// (bpf_trace_run*, the recursion guard, RCU, the program's entry and exit),
// the floor under which no tracepoint-based tracer can go.
var floorTPs string

// attachEmpty loads "r0 = 0; exit" as a tp_btf program on each tracepoint
// of floorTPs; detach releases them all.
func attachEmpty() (detach func(), err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, err
	}
	var closers []func() error
	detach = func() {
		for _, c := range closers {
			c()
		}
	}
	for _, tp := range strings.Split(floorTPs, ",") {
		tp = strings.TrimSpace(tp)
		if tp == "" {
			continue
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "floor",
			Type:         ebpf.Tracing,
			AttachType:   ebpf.AttachTraceRawTp,
			AttachTo:     tp,
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
			License:      "GPL",
		})
		if err != nil {
			detach()
			return nil, fmt.Errorf("-floor: loading an empty program for tracepoint %s: %w", tp, err)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			prog.Close()
			detach()
			return nil, fmt.Errorf("-floor: attaching an empty program to tracepoint %s: %w", tp, err)
		}
		closers = append(closers, l.Close, prog.Close)
	}
	return detach, nil
}

// floodFloor is one flood with the empty programs attached.
func floodFloor(st *setup, dur time.Duration, cpu int) (result, error) {
	detach, err := attachEmpty()
	if err != nil {
		return result{}, err
	}
	defer detach()
	time.Sleep(settle)
	return flood(st, dur, cpu)
}
