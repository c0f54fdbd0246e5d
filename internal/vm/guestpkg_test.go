package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBaseSuite(t *testing.T) {
	for spec, want := range map[string]string{
		"linux-perf/bookworm-backports": "bookworm",
		"bpftrace/bookworm":             "bookworm",
		"bpftrace":                      "bookworm",
		"linux-perf/sid":                "sid",
	} {
		if got := baseSuite(spec); got != want {
			t.Errorf("baseSuite(%q) = %q, want %q", spec, got, want)
		}
	}
}

// A package's file list (as fetchGuestPackages records it from the .deb's
// tarball) gives the programs to ship: those in program folders only.
func TestGuestPackagePrograms(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar")
	}
	dir := t.TempDir()
	for _, f := range []string{"usr/bin/perf", "usr/share/doc/perf/README", "usr/sbin/tool"} {
		p := filepath.Join(dir, "pkg", f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("perf", filepath.Join(dir, "pkg/usr/bin/perf-link")); err != nil {
		t.Fatal(err)
	}
	tarball, err := exec.Command("tar", "-C", filepath.Join(dir, "pkg"), "-c", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	names, err := tarNames(tarball)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	if err := os.WriteFile(filepath.Join(root, ".files-linux-perf"), []byte(strings.Join(names, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	progs, err := listPrograms(root, []string{"linux-perf/bookworm-backports"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(progs, " ")
	for _, want := range []string{"/usr/bin/perf", "/usr/bin/perf-link", "/usr/sbin/tool"} {
		if !strings.Contains(got, want) {
			t.Errorf("programs %q lack %s", got, want)
		}
	}
	if strings.Contains(got, "README") {
		t.Errorf("programs %q include documentation", got)
	}
	if _, err := listPrograms(root, []string{"bpftrace/bookworm"}); err == nil {
		t.Error("a package never fetched listed programs")
	}
}

func TestRunnerScriptRunsScript(t *testing.T) {
	s := runnerScript(runnerSpec{Line: "6.1", Script: "/pktfate/peers/peersguest -rounds 3", Busy: 1})
	for _, want := range []string{"cd /repo\n( \n/pktfate/peers/peersguest -rounds 3\n)\nrc=$?\n", "kill $busy_pids\nexit $rc\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("run.sh lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "run_pkg") {
		t.Errorf("run.sh with a script runs test packages:\n%s", s)
	}
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
}
