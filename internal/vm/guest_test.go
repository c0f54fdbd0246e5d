package vm

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd5a5f2000)
	libpcap.so.0.8 => /lib/x86_64-linux-gnu/libpcap.so.0.8 (0x00007f0b1c3f0000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b1c20f000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0b1c45e000)
`
	libs, err := parseLdd([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libpcap.so.0.8", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if strings.Join(libs, " ") != strings.Join(want, " ") {
		t.Errorf("libs = %q, want %q", libs, want)
	}
	if _, err := parseLdd([]byte("\tlibfoo.so.1 => not found\n")); err == nil {
		t.Error("unresolved library not reported")
	}
}

func TestRunnerScript(t *testing.T) {
	s := runnerScript(runnerSpec{
		Line: "6.12",
		Packages: []TestPackage{
			{ImportPath: "github.com/pktfate/pktfate/tracer", Rel: "tracer", Binary: "/tmp/w/tests/tracer.test", Race: true},
		},
		Run: "TestA|Test'B", Timeout: 9 * time.Minute, HasBin: true, HasKmod: true,
	})
	for _, want := range []string{
		"export PKTFATE_VM='6.12'", `export PKTFATE_KERNEL_RELEASE="$(uname -r)"`,
		"export PKTFATE_BIN=/usr/local/bin/pktfate", "export PKTFATE_KMOD_DIR=/pktfate/kmod",
		`-test.v -test.run 'TestA|Test'\''B' -test.timeout 9m0s`,
		"run_pkg 'github.com/pktfate/pktfate/tracer' '/pktfate/tests/tracer.test' '/repo/tracer' ', race detector'",
		"exit $rc",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("run.sh lacks %q:\n%s", want, s)
		}
	}
	// The script must be valid sh.
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
	busy := runnerScript(runnerSpec{Line: "6.1", Busy: 3})
	for _, want := range []string{"export PKTFATE_VM_BUSY=3", "for i in $(seq 3); do sh /pktfate/busy.sh &", "kill $busy_pids\nexit $rc"} {
		if !strings.Contains(busy, want) {
			t.Errorf("run.sh with -busy 3 lacks %q:\n%s", want, busy)
		}
	}
	if out, err := exec.Command("sh", "-n", "-c", busy).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
	bare := runnerScript(runnerSpec{Line: "6.1"})
	if strings.Contains(bare, "PKTFATE_BIN") || strings.Contains(bare, "PKTFATE_KMOD_DIR") || strings.Contains(bare, "busy") {
		t.Errorf("unset variables exported:\n%s", bare)
	}
}

func TestInitScriptIsValidSh(t *testing.T) {
	if out, err := exec.Command("sh", "-n", "-c", initScript).CombinedOutput(); err != nil {
		t.Errorf("sh -n /init: %v: %s", err, out)
	}
}

func TestParseLines(t *testing.T) {
	all, err := ParseLines("")
	if err != nil || len(all) != 3 {
		t.Fatalf("ParseLines(\"\") = %v, %v", all, err)
	}
	ls, err := ParseLines("7.2, 6.1,7.2")
	if err != nil || len(ls) != 2 || ls[0].Name != "7.2" || ls[1].Name != "6.1" {
		t.Errorf("ParseLines = %+v, %v", ls, err)
	}
	if _, err := ParseLines("5.10"); err == nil {
		t.Error("unknown line accepted")
	}
}

func TestSymlinkChainKeepsNames(t *testing.T) {
	dir := t.TempDir()
	multi := dir + "/xtables-legacy-multi"
	if err := os.WriteFile(multi, []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("xtables-legacy-multi", dir+"/iptables-legacy"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir+"/iptables-legacy", dir+"/iptables"); err != nil {
		t.Fatal(err)
	}
	got := symlinkChain(dir + "/iptables")
	want := []string{dir + "/iptables", dir + "/iptables-legacy", multi}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("chain = %q, want %q", got, want)
	}
}

func TestQemuArgs(t *testing.T) {
	def := strings.Join(qemuArgs(BootSpec{Kernel: "k", Initrd: "i"}), " ")
	if !strings.Contains(def, "-m 1G -smp 2") || strings.Contains(def, "icount") {
		t.Errorf("default machine: %s", def)
	}
	ic := strings.Join(qemuArgs(BootSpec{Kernel: "k", Initrd: "i", Machine: Machine{ICount: true, CPUs: 1, Memory: "2G"}}), " ")
	if !strings.Contains(ic, "-m 2G -smp 1 -icount shift=0,sleep=off") {
		t.Errorf("instruction-counting machine: %s", ic)
	}
}
