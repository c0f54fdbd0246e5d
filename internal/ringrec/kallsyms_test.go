package ringrec

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// TestParseKallsymsChunks: lines that straddle the chunks are parsed
// whole, whatever sizes the reads return, and a last line without its
// newline counts.
func TestParseKallsymsChunks(t *testing.T) {
	var b strings.Builder
	const n = 30000 // several chunks
	for i := range n {
		fmt.Fprintf(&b, "%016x T f", 0xffffffff81000000+uint64(i)*16)
		b.WriteString(strings.Repeat("x", i%40))
		if i%7 == 0 {
			b.WriteString("\t[mod]")
		}
		if i != n-1 {
			b.WriteByte('\n')
		}
	}
	text := b.String()
	for name, r := range map[string]io.Reader{
		"plain":   strings.NewReader(text),
		"onebyte": iotest.OneByteReader(strings.NewReader(text)),
		"half":    iotest.HalfReader(strings.NewReader(text)),
	} {
		s, err := ParseKallsyms(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(s.addrs) != n {
			t.Fatalf("%s: %d symbols, want %d", name, len(s.addrs), n)
		}
		for _, i := range []int{0, 1, 7, 4095, n - 1} {
			want := "f" + strings.Repeat("x", i%40)
			if i%7 == 0 {
				want += " [mod]"
			}
			if got := s.name(i); got != want {
				t.Errorf("%s: symbol %d is %q, want %q", name, i, got, want)
			}
		}
	}
	if _, err := ParseKallsyms(strings.NewReader("ffffffff81000000 T " + strings.Repeat("y", kallsymsChunk) + "\n")); err == nil || !strings.Contains(err.Error(), "line 1: longer than") {
		t.Errorf("a line longer than the chunk: %v", err)
	}
}

// BenchmarkLoadKallsyms reads this machine's /proc/kallsyms as a fresh
// pktfate does (a cost paid at every start, on a one-CPU machine before
// the capture is attached).
func BenchmarkLoadKallsyms(b *testing.B) {
	if _, err := os.Stat("/proc/kallsyms"); err != nil {
		b.Skip("no /proc/kallsyms here")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LoadKallsyms(); err != nil {
			b.Skip(err) // not root: addresses hidden
		}
	}
}
