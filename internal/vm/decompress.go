package vm

import (
	"bytes"
	"fmt"
	"os/exec"
)

// decompress pipes data through a host decompressor (xz, zstd) and
// returns its output.
func decompress(data []byte, tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("decompressing with %s: %w: %s", tool, err, tail(stderr.String(), 500))
	}
	return out.Bytes(), nil
}
