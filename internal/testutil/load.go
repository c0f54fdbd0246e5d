package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// LoadCPU keeps the CPU busy for the rest of the test, so that it proves
// its claim on a loaded machine: with no cpus, one process spinning in a
// shell loop wherever the scheduler puts it; otherwise one such process
// pinned to each CPU named. The processes are killed at cleanup. They are
// separate processes (not goroutines), so they compete with the test's
// kernel work and its other processes as a busy neighbour would, whatever
// GOMAXPROCS is. The harness's -busy N (PKTFATE_VM_BUSY) loads a whole VM
// run instead.
func LoadCPU(tb testing.TB, cpus ...int) {
	tb.Helper()
	if len(cpus) == 0 {
		cpus = []int{-1}
	}
	for _, cpu := range cpus {
		cmd, err := startBurner(cpu)
		if err != nil {
			tb.Fatalf("loading the CPU: %v", err)
		}
		tb.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
}

// startBurner starts one busy loop, pinned to cpu unless it is negative.
// The child inherits the CPU affinity of the thread that forks it: that
// thread is pinned for the fork and restored after, so the burner never
// runs anywhere else.
func startBurner(cpu int) (*exec.Cmd, error) {
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if cpu < 0 {
		return cmd, cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("reading CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pinning to CPU %d: %w", cpu, err)
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("restoring CPU affinity: %w", rerr)
	}
	return cmd, err
}

// cpuTicks returns the user+system time of process pid in clock ticks
// (/proc/PID/stat fields 14 and 15).
func cpuTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q %q", pid, f[11], f[12])
	}
	return utime + stime, nil
}
