package artifact

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRoundTrip: blocks written by Write come back byte for byte through
// a console that adds carriage returns and interleaves other lines, which
// Feed leaves to the caller.
func TestRoundTrip(t *testing.T) {
	var con bytes.Buffer
	con.WriteString("=== RUN   TestX\n")
	big := bytes.Repeat([]byte{0, 1, 2, 0xff, '\n', '\r'}, 1000)
	if err := Write(&con, "cap.pcapng", big); err != nil {
		t.Fatal(err)
	}
	con.WriteString("--- PASS: TestX\n")
	if err := Write(&con, "empty", nil); err != nil {
		t.Fatal(err)
	}
	s := Scanner{Dir: t.TempDir()}
	var passed []string
	for _, l := range strings.Split(strings.TrimSuffix(con.String(), "\n"), "\n") {
		if !s.Feed(l + "\r") {
			passed = append(passed, l)
		}
	}
	s.Close()
	if len(s.Errs) != 0 || len(s.Saved) != 2 {
		t.Fatalf("saved %v, errors %v", s.Saved, s.Errs)
	}
	if strings.Join(passed, "|") != "=== RUN   TestX|--- PASS: TestX" {
		t.Errorf("lines left to the console: %q", passed)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir, "cap.pcapng"))
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("cap.pcapng: %d bytes, want %d (%v)", len(got), len(big), err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir, "empty")); err != nil || fi.Size() != 0 {
		t.Errorf("empty: %v %v", fi, err)
	}
}

// TestDamage: a block cut by the end of the console, one with a kernel
// message inside, and a name that would escape the folder are errors,
// never files.
func TestDamage(t *testing.T) {
	s := Scanner{Dir: t.TempDir()}
	for _, l := range []string{
		"=== pktfate-artifact ../evil", "AAAA", "=== end pktfate-artifact",
		"=== pktfate-artifact noisy", "AAAA", "[  12.3] WARNING: CPU: 1 PID: 7", "=== end pktfate-artifact",
		"=== pktfate-artifact cut", "AAAA",
	} {
		s.Feed(l)
	}
	s.Close()
	if len(s.Saved) != 0 || len(s.Errs) != 3 {
		t.Fatalf("saved %v, errors %v", s.Saved, s.Errs)
	}
	for i, want := range []string{"../evil", "bad base64", "console ended"} {
		if !strings.Contains(s.Errs[i].Error(), want) {
			t.Errorf("error %d: %v, want it to say %q", i, s.Errs[i], want)
		}
	}
	if err := Write(&bytes.Buffer{}, "a/b", nil); err == nil {
		t.Error("Write accepted a name with a slash")
	}
}

// TestDiscard: without a folder, blocks are swallowed and nothing is kept.
func TestDiscard(t *testing.T) {
	var con bytes.Buffer
	Write(&con, "x", []byte("data"))
	var s Scanner
	for _, l := range strings.Split(strings.TrimSpace(con.String()), "\n") {
		if !s.Feed(l) {
			t.Errorf("line %q left to the console", l)
		}
	}
	if len(s.Saved)+len(s.Errs) != 0 {
		t.Errorf("saved %v, errors %v", s.Saved, s.Errs)
	}
}
