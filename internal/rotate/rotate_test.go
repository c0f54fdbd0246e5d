package rotate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s ends in the middle of a line: %q", path, b)
	}
	return strings.Fields(string(b))
}

// TestRotatesBySize: files stay under the size, hold whole lines, the
// newest lines are in FILE and FILE.1 ... FILE.Keep in order, older ones
// are gone, and a file left by an earlier run becomes FILE.1.
func TestRotatesBySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte("earlier-run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(Config{Path: path, MaxSize: 100, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, path+".1"); len(got) != 1 || got[0] != "earlier-run" {
		t.Fatalf("the earlier run's file was not rotated away: %v", got)
	}
	var all []string
	var buf bytes.Buffer
	for i := range 60 {
		l := fmt.Sprintf("line-%03d", i) // 9 bytes with the newline
		all = append(all, l)
		buf.WriteString(l + "\n")
		if i%7 == 6 { // writes of several lines, cut anywhere
			w.Write(buf.Bytes())
			buf.Reset()
		}
	}
	w.Write(buf.Bytes())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var kept []string
	for i, p := range []string{path + ".2", path + ".1", path} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 100 {
			t.Errorf("%s has %d bytes, more than the limit", p, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
		l := lines(t, p)
		if i < 2 && len(l) != 100/9 {
			t.Errorf("%s holds %d lines of 9 bytes, want a full file of %d", p, len(l), 100/9)
		}
		kept = append(kept, l...)
	}
	if want := all[len(all)-len(kept):]; strings.Join(kept, ",") != strings.Join(want, ",") {
		t.Errorf("kept lines %v, want the newest in order %v", kept, want)
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more files kept than asked")
	}
	st := w.Stats()
	if st.Rotations < 5 || st.LostLines != 0 {
		t.Errorf("stats %+v: want several rotations, nothing lost", st)
	}
}

// TestLongLine: a line longer than a file gets a file of its own.
func TestLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	w, err := Open(Config{Path: path, MaxSize: 10, Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("short\n" + strings.Repeat("x", 25) + "\nend\n"))
	w.Close()
	for p, want := range map[string]string{path + ".2": "short", path + ".1": strings.Repeat("x", 25), path: "end"} {
		if got := lines(t, p); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %q", p, got, want)
		}
	}
}

// TestFailuresAreCounted: a write that fails (a full disk) is never
// returned, its lines are counted as lost and the error logged once.
func TestFailuresAreCounted(t *testing.T) {
	var logs []string
	w, err := Open(Config{Path: "/dev/full", MaxSize: 1 << 20, Log: func(m string) { logs = append(logs, m) }})
	if err != nil {
		t.Skipf("no /dev/full here: %v", err)
	}
	defer w.Close()
	for range 3 {
		if n, err := w.Write([]byte("a\nb\n")); err != nil || n != 4 {
			t.Fatalf("Write = %d, %v: want 4, nil", n, err)
		}
	}
	if st := w.Stats(); st.LostLines != 6 || st.Errors != 3 {
		t.Errorf("stats %+v, want 6 lines lost in 3 errors", st)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "no space left") {
		t.Errorf("logged %q, want the error once", logs)
	}
}

// TestReopen: after the file was moved away (logrotate), Reopen begins a
// new one; otherwise it appends.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	w, err := Open(Config{Path: path, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("one\n"))
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("two\n")) // still into the moved file
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("three\n"))
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("four\n"))
	w.Close()
	if got := strings.Join(lines(t, path+".moved"), ","); got != "one,two" {
		t.Errorf("moved file: %s", got)
	}
	if got := strings.Join(lines(t, path), ","); got != "three,four" {
		t.Errorf("reopened file: %s", got)
	}
	if _, err := Open(Config{Path: path, MaxSize: 0}); err == nil {
		t.Error("a zero size limit is accepted")
	}
}
