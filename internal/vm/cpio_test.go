package vm

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name         string
	mode         uint32
	data         string
	major, minor uint32
}

// readCPIO parses concatenated newc archives (what the kernel accepts).
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	for off < len(b) {
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			return nil, fmt.Errorf("bad header at %d", off)
		}
		field := func(i int) uint32 {
			v, _ := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			return uint32(v)
		}
		mode, size, major, minor, nameSize := field(1), int(field(6)), field(9), field(10), int(field(11))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+nameSize-1])
		if b[nameStart+nameSize-1] != 0 {
			return nil, fmt.Errorf("name %q not NUL-terminated", name)
		}
		dataStart := nameStart + nameSize
		dataStart += pad4(dataStart)
		if dataStart+size > len(b) {
			return nil, fmt.Errorf("entry %q truncated", name)
		}
		data := string(b[dataStart : dataStart+size])
		off = dataStart + size
		off += pad4(off)
		if name == "TRAILER!!!" {
			continue
		}
		out = append(out, cpioEntry{name, mode, data, major, minor})
	}
	return out, nil
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.File("/usr/sbin/tool", 0o755, []byte("#!/bin/sh\n")))
	must(c.Symlink("usr/sbin/iptables-legacy", "xtables-legacy-multi"))
	must(c.CharDev("dev/console", 0o600, 5, 1))
	must(c.Dir("usr", 0)) // already created as a parent: not repeated
	must(c.File("empty", 0o644, nil))
	must(c.Close())
	// A second archive appended, as the payload is.
	c2 := NewCPIOWriter(&buf)
	must(c2.File("pktfate/run.sh", 0o755, []byte("exit 0\n")))
	must(c2.Close())

	entries, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{"usr", 0o40755, "", 0, 0},
		{"usr/sbin", 0o40755, "", 0, 0},
		{"usr/sbin/tool", 0o100755, "#!/bin/sh\n", 0, 0},
		{"usr/sbin/iptables-legacy", 0o120777, "xtables-legacy-multi", 0, 0},
		{"dev", 0o40755, "", 0, 0},
		{"dev/console", 0o20600, "", 5, 1},
		{"empty", 0o100644, "", 0, 0},
		{"pktfate", 0o40755, "", 0, 0},
		{"pktfate/run.sh", 0o100755, "exit 0\n", 0, 0},
	}
	if len(entries) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(entries), entries, len(want))
	}
	for i := range want {
		if entries[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, entries[i], want[i])
		}
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", buf.Len())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrShortWrite
	}
	f.n--
	return len(p), nil
}

func TestCPIOWriteErrorSticks(t *testing.T) {
	c := NewCPIOWriter(&failWriter{n: 1})
	_ = c.File("a", 0o644, []byte("x")) // header ok, data fails
	if err := c.Close(); err == nil {
		t.Error("Close after a failed write returned nil")
	}
}
