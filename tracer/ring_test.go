package tracer

import (
	"bytes"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/pktfate/pktfate/internal/testutil"
)

// pending is how many bytes wait in the ring.
func (r *ring) pending() uint64 {
	return atomic.LoadUint64(r.prodPos()) - atomic.LoadUint64(r.consPos())
}

// ringWriter returns a program that copies the first size bytes of its
// input packet into rb with bpf_ringbuf_output (run with Program.Run).
func ringWriter(t *testing.T, rb *ebpf.Map, size int32) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "GPL",
		Instructions: asm.Instructions{
			// r6 = skb; copy `size` bytes of the packet to the stack.
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -64),
			asm.Mov.Imm(asm.R4, size),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "out"),
			asm.LoadMapPtr(asm.R1, rb.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -64),
			asm.Mov.Imm(asm.R3, size),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnRingbufOutput.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestRingDrain writes records of three sizes through a one-page ring many
// times around, draining in batches of varying length: every record comes
// out once, whole and in order, across the wrap of the ring's end; a full
// ring refuses records rather than overwriting unread ones.
func TestRingDrain(t *testing.T) {
	testutil.RequireRoot(t)
	rb, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	r, err := newRing(rb)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sizes := []int32{20, 36, 60}
	progs := make([]*ebpf.Program, len(sizes))
	for i, sz := range sizes {
		progs[i] = ringWriter(t, rb, sz)
	}
	// Input packets: an Ethernet header (the program's skb starts after
	// it), a sequence number, then a fill pattern.
	write := func(seq uint32) {
		pkt := make([]byte, 64)
		binary.LittleEndian.PutUint32(pkt, seq)
		for i := 4; i < len(pkt); i++ {
			pkt[i] = byte(seq) ^ byte(i)
		}
		if _, err := progs[seq%3].Run(&ebpf.RunOptions{Data: append(make([]byte, 14), pkt...)}); err != nil {
			t.Fatal(err)
		}
	}
	var next, got uint32
	check := func(sample []byte) {
		seq := binary.LittleEndian.Uint32(sample)
		want := make([]byte, sizes[seq%3])
		binary.LittleEndian.PutUint32(want, seq)
		for i := 4; i < len(want); i++ {
			want[i] = byte(seq) ^ byte(i)
		}
		if seq != got || !bytes.Equal(sample, want) {
			t.Fatalf("record %d: got seq %d, %x", got, seq, sample)
		}
		got++
	}
	for round := range 200 {
		for range round%17 + 1 {
			write(next)
			next++
		}
		if _, err := r.drain(check); err != nil {
			t.Fatal(err)
		}
	}
	if got != next || r.pending() != 0 {
		t.Fatalf("drained %d of %d records, %d bytes pending", got, next, r.pending())
	}
	// A full ring: the writes beyond its room are refused, the rest intact.
	for range 200 {
		write(next)
		next++
	}
	n, err := r.drain(check)
	if err != nil || n == 0 || n >= 200 {
		t.Fatalf("drained %d records of 200 written into a 4 KiB ring: %v", n, err)
	}
	if err := r.wait(time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.drain(check); err != errRingClosed {
		t.Fatalf("drain after Close: %v", err)
	}
}
