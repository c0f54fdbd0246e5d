// Package ringrectest loads the recorded ring records of testdata/records
// for the tests of the packages that read them.
package ringrectest

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/internal/ringrec"
)

// Root returns the repository's root directory: the first directory above
// the test's that holds testdata/records. It is not found by go.mod: the VM
// payload (internal/vm) ships the repository's testdata folders under /repo
// and no go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "testdata", "records", "records.json")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no testdata/records/records.json above the test's directory")
		}
		dir = parent
	}
}

// Fixture is one recorded ring record (testdata/records, written by the
// tracer's TestRecordFixtures on a real kernel) with what it decodes to.
type Fixture struct {
	Name         string `json:"name"`
	File         string `json:"file"`
	Fate         string `json:"fate"`
	Reason       string `json:"reason"`
	ReasonCode   uint32 `json:"reason_code"`
	Location     string `json:"location"`
	LocationAddr uint64 `json:"location_addr"`
	Proto        string `json:"proto"`
	// Raw is the record.
	Raw []byte `json:"-"`
}

// Fixtures loads every record of testdata/records.
func Fixtures(t testing.TB) []Fixture {
	t.Helper()
	dir := filepath.Join(Root(t), "testdata", "records")
	b, err := os.ReadFile(filepath.Join(dir, "records.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Records []Fixture }
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for i := range m.Records {
		f, err := os.ReadFile(filepath.Join(dir, m.Records[i].File))
		if err != nil {
			t.Fatal(err)
		}
		var hx strings.Builder
		for _, line := range strings.Split(string(f), "\n") {
			line, _, _ = strings.Cut(line, "#")
			hx.WriteString(strings.Join(strings.Fields(line), ""))
		}
		if m.Records[i].Raw, err = hex.DecodeString(hx.String()); err != nil {
			t.Fatalf("%s: %v", m.Records[i].File, err)
		}
	}
	if len(m.Records) < 3 {
		t.Fatalf("%d record fixtures", len(m.Records))
	}
	return m.Records
}

// Symbols names the fixtures' locations as the kernel did.
func Symbols(t testing.TB) *ringrec.Symbols {
	f, err := os.Open(filepath.Join(Root(t), "testdata", "kallsyms", "6.18-records.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ringrec.ParseKallsyms(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Reasons names the fixtures' drop reasons as their kernel did.
func Reasons(fx []Fixture) *ringrec.Reasons {
	r := ringrec.NewReasons()
	r.Add(0, "SKB_NOT_DROPPED_YET")
	r.Add(1, "SKB_CONSUMED")
	for _, f := range fx {
		if f.Reason != "" {
			r.Add(f.ReasonCode, "SKB_DROP_REASON_"+f.Reason)
		}
	}
	r.AddSubsys(1, "SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE")
	return r
}

// WriteRaw writes the records of fx rounds times to w as trace
// --output-raw would (header h, the fixtures' reasons and symbols), and
// returns the writer for the caller to flush or close with a trailer.
func WriteRaw(tb testing.TB, w io.Writer, h ringrec.RawHeader, fx []Fixture, rounds int) *ringrec.RawWriter {
	tb.Helper()
	h.Reasons, h.Subsys = Reasons(fx).Table()
	rw, err := ringrec.NewRawWriter(w, h)
	if err != nil {
		tb.Fatal(err)
	}
	rw.Symbols = Symbols(tb)
	for range rounds {
		for _, f := range fx {
			rw.Record(f.Raw)
		}
	}
	return rw
}
