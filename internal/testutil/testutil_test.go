package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestHexFixtureRoundTrip: what HexFixture writes, ReadHex reads back.
func TestHexFixtureRoundTrip(t *testing.T) {
	for _, n := range []int{0, 3, 16, 37} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(i*7 + 1)
		}
		p := filepath.Join(t.TempDir(), "f.hex")
		if err := os.WriteFile(p, []byte(HexFixture(t, "a test", raw)), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := ReadHex(t, p); !bytes.Equal(got, raw) {
			t.Errorf("%d bytes: read back %x, want %x", n, got, raw)
		}
	}
}
