package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// burners returns the pids of the busy loops LoadCPU started in this
// process (children running "while :; do :; done").
func burners(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err1 := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		stat, err2 := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err1 != nil || err2 != nil || !strings.Contains(string(cmdline), "while :; do :; done") {
			continue
		}
		s := string(stat)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 1 && f[1] == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitBurners polls until n burners run, failing after a deadline: a
// child's /proc cmdline is empty for a moment after exec lets its vfork
// parent go on (the kernel sets the new arguments' place after that), so
// one just started may not show yet.
func waitBurners(t *testing.T, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := burners(t)
		if len(pids) == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d burners running, want %d", len(pids), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBurning polls until pid has used at least 20 more clock ticks of CPU
// (200 ms at USER_HZ 100), failing after a generous deadline.
func waitBurning(t *testing.T, pid int) {
	t.Helper()
	start, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now, err := cpuTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		if now-start >= 20 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("burner %d used %d ticks in 30 s, want 20", pid, now-start)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLoadCPU(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to run the busy loop in")
	}
	var pids []int
	t.Run("unpinned", func(t *testing.T) {
		LoadCPU(t)
		pids = waitBurners(t, 1)
		waitBurning(t, pids[0])
	})
	// Cleanup killed and reaped it.
	if _, err := os.Stat("/proc/" + strconv.Itoa(pids[0])); err == nil {
		t.Errorf("burner %d still exists after its test ended", pids[0])
	}

	t.Run("pinned", func(t *testing.T) {
		var online unix.CPUSet
		if err := unix.SchedGetaffinity(0, &online); err != nil {
			t.Fatal(err)
		}
		cpu := -1
		for c := range 1024 {
			if online.IsSet(c) {
				cpu = c // the last CPU this test may use
			}
		}
		LoadCPU(t, cpu)
		pids := waitBurners(t, 1)
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(pids[0], &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(cpu) {
			t.Errorf("burner affinity has %d CPUs (CPU %d set: %v), want only CPU %d", set.Count(), cpu, set.IsSet(cpu), cpu)
		}
		waitBurning(t, pids[0])
		// The test's own thread affinity is back to what it was.
		var mine unix.CPUSet
		if err := unix.SchedGetaffinity(0, &mine); err != nil {
			t.Fatal(err)
		}
		if mine != online {
			t.Errorf("LoadCPU left this thread's affinity changed")
		}
	})
}
