package kmod

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/pktfate/pktfate/internal/testutil"
)

// FuzzParseMessage feeds the DROP decoder every recorded fixture and
// mutations: it must never panic, fail only with ErrMalformed or
// ErrUnexpected, and keep no more payload than the input held.
func FuzzParseMessage(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*", "*.hex"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, p := range files {
		f.Add(testutil.ReadHex(f, p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Drop
		err := ParseMessage(b, &d)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnexpected) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrUnexpected: %v", err)
			}
			return
		}
		if len(d.Payload) > PayloadMax || len(d.Payload) > len(b) {
			t.Fatalf("payload of %d bytes from %d input bytes", len(d.Payload), len(b))
		}
	})
}
