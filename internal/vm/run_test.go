package vm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeBoots returns a boot function replaying results, counting calls.
func fakeBoots(calls *int, results ...BootResult) func(context.Context, BootSpec) (BootResult, error) {
	return func(context.Context, BootSpec) (BootResult, error) {
		*calls++
		if *calls > len(results) {
			return BootResult{}, errors.New("unexpected boot")
		}
		return results[*calls-1], nil
	}
}

func TestBootRetriesOnlyUnreportedVMs(t *testing.T) {
	tests := []struct {
		name    string
		results []BootResult
		calls   int
		rc      int
		wantErr bool
	}{
		{"pass", []BootResult{{Reported: true}}, 1, 0, false},
		{"failed test is not retried", []BootResult{{Reported: true, RC: 1}}, 1, 1, false},
		{"lost marker retried once", []BootResult{{TimedOut: true}, {Reported: true}}, 2, 0, false},
		{"two lost markers fail", []BootResult{{}, {}}, 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			calls := 0
			r := &runner{cfg: Config{Timeout: time.Minute}, out: &syncWriter{w: &out}, bootVM: fakeBoots(&calls, tt.results...)}
			var res lineResult
			err := r.boot(context.Background(), Line{Name: "6.1"}, Kernel{Release: "6.1.0-1-amd64"}, "initrd", &res)
			if calls != tt.calls || res.rc != tt.rc || (err != nil) != tt.wantErr {
				t.Errorf("calls=%d rc=%d err=%v; want calls=%d rc=%d err=%v", calls, res.rc, err, tt.calls, tt.rc, tt.wantErr)
			}
			if retried := strings.Contains(out.String(), "retrying once"); retried != (tt.calls == 2) {
				t.Errorf("retry notice printed=%v, want %v:\n%s", retried, tt.calls == 2, out.String())
			}
		})
	}
}
