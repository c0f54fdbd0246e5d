package report

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The readers of untrusted files never panic, always return a summary for
// what they could read, and name damage instead of failing silently.

func addCaptures(f *testing.F, pattern string) {
	paths, _ := filepath.Glob(pattern)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if len(b) > 64 {
			f.Add(b[:len(b)/2]) // cut
		}
	}
}

func checkRead(t *testing.T, data []byte) {
	res, err := Read(bytes.NewReader(data), "fuzz")
	if err != nil {
		return // unreadable as a whole: one error, no panic
	}
	if res.Summary == nil {
		t.Fatal("a readable capture without a summary")
	}
	if !res.HasSummary && len(res.Summary.UnknownReasons()) == 0 {
		t.Fatal("a capture without its summary does not say its completeness is unknown")
	}
	if len(res.Damage) > 0 && res.DamageError() == nil {
		t.Fatal("damage without an error")
	}
}

func FuzzReadNDJSON(f *testing.F) {
	addCaptures(f, "../../testdata/golden/*.ndjson")
	addCaptures(f, "../../testdata/schema/v*/*.ndjson")
	f.Add([]byte(`{"type":"summary","schema":1,"lost":[{"observer":"x","name":"y","value":1}],"complete":null}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != '{' {
			return
		}
		checkRead(t, data)
	})
}

func FuzzReadPcapng(f *testing.F) {
	addCaptures(f, "../../testdata/schema/v*/*.pcapng")
	f.Fuzz(func(t *testing.T, data []byte) {
		if !bytes.HasPrefix(data, pcapngMagic) {
			data = append(append([]byte{}, pcapngMagic...), data...)
		}
		checkRead(t, data)
	})
}

func FuzzReadRecording(f *testing.F) {
	addCaptures(f, "../../testdata/streams/*.jsonl")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != '{' {
			return
		}
		checkRead(t, data)
	})
}
