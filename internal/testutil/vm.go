package testutil

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/vm/artifact"
)

// SendArtifact hands data to the host as the file name in the matrix
// run's artifact folder (vmtest -artifacts; make test checks them after
// the matrix). Outside the VM it does nothing: the host test reads its own
// files directly.
func SendArtifact(tb testing.TB, name string, data []byte) {
	tb.Helper()
	if InVM() == "" {
		return
	}
	if err := artifact.Write(os.Stdout, name, data); err != nil {
		tb.Fatal(err)
	}
}

// ModuleName is pktfate's kernel module (kmod/).
const ModuleName = "pktfate"

// ModulePath returns pktfate.ko built for the VM's kernel
// (PKTFATE_KMOD_DIR). The host kernel cannot load modules: there it skips,
// and the callers' host branches assert that absence instead.
func ModulePath(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	if InVM() == "" {
		tb.Skip("the host kernel cannot load modules; this runs in the kernel matrix")
	}
	p := filepath.Join(os.Getenv("PKTFATE_KMOD_DIR"), ModuleName+".ko")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("module not built for this kernel (PKTFATE_KMOD_DIR): %v", err)
	}
	return p
}

// InsertModule loads the module at path with params (finit_module).
func InsertModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("loading %s: %w", path, err)
	}
	return nil
}

// LoadModule loads pktfate.ko for the rest of the test and unloads it at
// cleanup.
func LoadModule(tb testing.TB) { LoadModuleWith(tb, "") }

// LoadModuleWith is LoadModule with module parameters ("queue_len=2").
func LoadModuleWith(tb testing.TB, params string) {
	tb.Helper()
	if err := InsertModule(ModulePath(tb), params); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := UnloadModule(); err != nil {
			tb.Error(err)
		}
	})
}

// UnloadModule removes pktfate.ko, waiting up to two seconds for its
// users (sockets, in-flight work) to go.
func UnloadModule() error {
	var err error
	for range 100 {
		if err = unix.DeleteModule(ModuleName, unix.O_NONBLOCK); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("unloading %s: %w", ModuleName, err)
	}
	return nil
}

// KernelLine names the kernel for recorded fixtures: the VM's line, or
// the host's release.
func KernelLine() string {
	if l := InVM(); l != "" {
		return l
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

// HexFixture formats raw as a fixture ReadHex reads back: a comment line
// saying which kernel and test recorded it, then hex in groups of four
// bytes, sixteen bytes a line.
func HexFixture(tb testing.TB, comment string, raw []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Recorded from kernel %s (%s) by %s: %s\n", os.Getenv("PKTFATE_KERNEL_RELEASE"), KernelLine(), tb.Name(), comment)
	for i := 0; i < len(raw); i += 16 {
		line := raw[i:min(i+16, len(raw))]
		for j := 0; j < len(line); j += 4 {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(hex.EncodeToString(line[j:min(j+4, len(line))]))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
