package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/internal/scenario"
	"github.com/pktfate/pktfate/internal/testutil"
)

const (
	libraryDir = "../../testdata/scenarios"
	brokenFile = "../../internal/scenario/testdata/broken-expectation.yaml"
)

// TestCheckBadInput: flag mistakes, invalid scenarios (a drop reason no
// kernel has among them) and output files that cannot be written exit
// with status 2 before anything runs (no privileges needed), naming
// file, line, field.
func TestCheckBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "check needs scenario files or directories"},
		{[]string{"check", "--no-such-flag", libraryDir}, "flag provided but not defined: -no-such-flag"},
		{[]string{"check", "--update-baseline", libraryDir}, "--update-baseline needs --baseline FILE"},
		{[]string{"check", "no-such-scenario.yaml"}, "no-such-scenario.yaml: reading scenario: no such file or directory"},
		{[]string{"check", "../../internal/scenario/testdata/bad"}, "bad/several.yaml:13: traffic[0].proto: \"sctp\": use udp, tcp or icmp"},
		{[]string{"check", "../../internal/scenario/testdata/bad/wrong-type.yaml"}, "wrong-type.yaml:14: traffic[0].count: cannot unmarshal"},
		{[]string{"check", "--baseline", "no-such-baseline.json", libraryDir}, "reading baseline: open no-such-baseline.json"},
		{[]string{"check", "../../internal/scenario/testdata/bad/unknown-reason.yaml"},
			"unknown-reason.yaml:12: expect[0].reason: NO_SOCKT: neither this kernel"},
		{[]string{"check", "--junit", "no-such-dir/junit.xml", brokenFile}, "--junit no-such-dir/junit.xml: cannot write it (no such file or directory): name a file in a folder that exists"},
		{[]string{"check", "--baseline", "../../testdata/baselines/6.18.json", "--write-baseline", "no-such-dir/b.json", brokenFile}, "--write-baseline no-such-dir/b.json: cannot write it"},
		{[]string{"check", "--baseline", "no-such-dir/b.json", "--update-baseline", brokenFile}, "--baseline (with --update-baseline) no-such-dir/b.json: cannot write it"},
		{[]string{"check", "--baseline", "b.json", "--update-baseline", "--write-baseline", "c.json", brokenFile}, "give it or --write-baseline FILE, not both"},
	} {
		var out, errb bytes.Buffer
		rc := realMain(tc.args, &out, &errb)
		if msg := errb.String(); rc != 2 || !strings.Contains(msg, tc.want) {
			t.Errorf("%q: exit status %d, stderr %q; want 2 and %q", tc.args, rc, msg, tc.want)
		}
	}
}

// runCheckBinary runs `pktfate check` and returns stdout, stderr and the
// exit status.
func runCheckBinary(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(pktfateBinary(t), append([]string{"check"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatal(err)
	return "", "", 0
}

// availableScenarios is the library, less scenarios whose tools this
// machine lacks (the VM guests have no tc): those are named in the log.
func availableScenarios(t *testing.T) []string {
	t.Helper()
	scenarios, err := scenario.Load([]string{libraryDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, s := range scenarios {
		var missing error
		for _, r := range s.Rules {
			if err := scenario.ToolAvailable(r.Tool); err != nil {
				missing = err
			}
		}
		if missing != nil && testutil.InVM() != "" {
			t.Logf("not running %s here: %v (the guest needs it in vm.HostTools)", s.Name, missing)
			continue
		}
		files = append(files, s.File)
	}
	return files
}

// TestCheckLibrary runs the whole scenario library with `pktfate check`:
// everything passes (flaky scenarios and known gaps are logged), the JUnit
// file says so, and the fates are compared with this kernel line's
// baseline in testdata/baselines. The run's own baseline (the committed
// one updated with the scenarios that passed) is written too: when it
// differs from the committed one (new scenarios, new fates) it is logged
// and, in the matrix, sent out as the artifact baseline-LINE.json, to be
// reviewed and committed.
func TestCheckLibrary(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LockScenarios(t)
	dir := t.TempDir()
	junit := filepath.Join(dir, "junit.xml")
	line := testutil.InVM()
	if line == "" {
		// The host's kernel line: major.minor of its release.
		parts := strings.SplitN(kernelRelease(), ".", 3)
		line = strings.Join(parts[:min(2, len(parts))], ".")
	}
	committed := filepath.Join("../../testdata/baselines", line+".json")
	base := filepath.Join(dir, "baseline.json")
	written := filepath.Join(dir, "baseline-"+line+".json")
	args := []string{"--junit", junit, "--baseline", base}
	old, err := os.ReadFile(committed)
	if err == nil {
		if err := os.WriteFile(base, old, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--write-baseline", written)
	} else {
		args = []string{"--junit", junit, "--baseline", written, "--update-baseline"}
	}
	files := availableScenarios(t)
	stdout, stderr, rc := runCheckBinary(t, append(args, files...)...)
	t.Logf("pktfate check:\n%s%s", stdout, stderr)
	if b, err := os.ReadFile(written); err != nil {
		t.Errorf("the run's baseline: %v", err)
	} else if !sameFates(t, b, old) {
		t.Logf("this run's baseline differs from %s (new scenarios or fates); to review and commit:\n%s", committed, b)
		testutil.SendArtifact(t, "baseline-"+line+".json", b)
	}
	if rc != 0 {
		t.Fatalf("exit status %d, want 0", rc)
	}
	if strings.Contains(stdout, "FLAKY") {
		t.Logf("flaky scenarios (passed only when run again) above")
	}
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Suite    struct {
			Skipped int `xml:"skipped,attr"`
		} `xml:"testsuite"`
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("JUnit file: %v", err)
	}
	// One testcase per scenario, plus one (skipped) per known gap.
	if doc.Tests != len(files)+doc.Suite.Skipped || doc.Failures != 0 || doc.Errors != 0 {
		t.Errorf("JUnit file: %+v, want %d scenarios (and the known gaps) and no failure", doc, len(files))
	}
}

// sameFates tells whether two baselines record the same fates, counts
// (floods vary) and the kernel's exact release aside.
func sameFates(t *testing.T, a, b []byte) bool {
	t.Helper()
	norm := func(data []byte) string {
		var bl scenario.Baseline
		if len(data) == 0 || json.Unmarshal(data, &bl) != nil {
			return ""
		}
		bl.Kernel = ""
		for _, s := range bl.Scenarios {
			for _, gs := range s.Observed {
				for i := range gs {
					gs[i].Count = 0
				}
			}
		}
		out, err := json.Marshal(bl)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	na := norm(a)
	return na != "" && na == norm(b)
}

// TestCheckBrokenExpectation: a scenario expecting the wrong fate is a
// regression (not a flake: it fails again when retried), with a message
// saying what was expected and what happened, and exit status 1; the
// NDJSON and JUnit outputs say the same.
func TestCheckBrokenExpectation(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LockScenarios(t)
	junit := filepath.Join(t.TempDir(), "junit.xml")
	stdout, stderr, rc := runCheckBinary(t, "--junit", junit, brokenFile)
	want := "regression: closed port: for udp dst 192.0.2.2 dport 9 expected exactly 2 × drop NETFILTER_DROP at hook LOCAL_IN; 0 did, saw 2 × drop NO_SOCKET"
	if rc != 1 || !strings.Contains(stdout, "FAIL  broken-expectation") || !strings.Contains(stdout, want) ||
		!strings.Contains(stderr, "1 of 1 scenario failed") {
		t.Errorf("exit status %d, want 1; stdout:\n%s\nstderr:\n%s\nwant %q", rc, stdout, stderr, want)
	}
	if data, err := os.ReadFile(junit); err != nil || !bytes.Contains(data, []byte(`<failure message="closed port: for udp dst 192.0.2.2 dport 9 expected exactly 2 × drop NETFILTER_DROP`)) {
		t.Errorf("JUnit file (%v):\n%s", err, data)
	}

	stdout, _, rc = runCheckBinary(t, "--output-json", "--no-retry", brokenFile)
	var res, sum map[string]any
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if rc != 1 || len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &res) != nil || json.Unmarshal([]byte(lines[1]), &sum) != nil {
		t.Fatalf("--output-json: exit status %d, output:\n%s", rc, stdout)
	}
	if res["type"] != "scenario" || res["status"] != "fail" || sum["type"] != "summary" || sum["failed"] != 1.0 {
		t.Errorf("--output-json: %v / %v", res, sum)
	}
}
