package scenario

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/testutil"
	"github.com/pktfate/pktfate/tracer"
)

func newTestRunner(t *testing.T) *Runner {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.LockScenarios(t)
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	decoder, err := tracer.DefaultDecoder(kernel)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tracer.SelectConfig{Kernel: kernel, Decoder: decoder}
	r, err := NewRunner(tracer.ForNetns(cfg), tracer.MonoNow, decoder.Reasons.Names())
	if err != nil {
		t.Fatal(err)
	}
	// As pktfate check chooses them for several namespaces.
	r.AllSources = func() ([]fate.Source, []fate.SourceStatus, error) {
		c := cfg
		c.Names, c.Optional = []string{tracer.SourceEBPF}, []string{tracer.SourceNF}
		c.Filters.Drops, c.Filters.Consumes = true, true
		sel, err := tracer.Select(c)
		if err != nil {
			return nil, nil, err
		}
		return sel.Sources, sel.Status, nil
	}
	return r
}

// TestRunLibrary runs every scenario of the library through the real
// runner: each must pass, and leave no namespace behind.
func TestRunLibrary(t *testing.T) {
	if vm := testutil.InVM(); vm != "" {
		t.Skipf("the kernel matrix runs the same library through the binary: cmd/pktfate TestCheckLibrary (%s)", vm)
	}
	r := newTestRunner(t)
	scenarios, err := Load([]string{"../../testdata/scenarios"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, res := range r.RunAll(ctx, scenarios, nil) {
		switch res.Status {
		case StatusPass:
		case StatusGap:
			t.Logf("%s: known gaps: %v", res.Name, res.Gaps)
		case StatusFlake:
			t.Logf("%s: flaky (failed, then passed): %q", res.Name, res.FirstAttempt)
		default:
			t.Errorf("%s: %s %s %q notes %q", res.Name, res.Status, res.Error, res.Regressions, res.Notes)
		}
	}
	left, _ := filepath.Glob("/run/netns/" + NSPrefix + "*")
	for _, p := range left {
		if strings.HasPrefix(filepath.Base(p), NSPrefix+itoa(os.Getpid())+"-") {
			t.Errorf("namespace left behind: %s", p)
		}
	}
}

// TestRunBroken: the deliberately broken expectation is a regression (twice:
// it is no flake), and the message says what was expected and what was seen.
func TestRunBroken(t *testing.T) {
	r := newTestRunner(t)
	s, err := ParseFile("testdata/broken-expectation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := r.RunAll(context.Background(), []*Scenario{s}, nil)[0]
	// The function is __udp4_lib_rcv, or udp_rcv where it is inlined (7.2).
	want := "closed port: for udp dst 192.0.2.2 dport 9 expected exactly 2 × drop NETFILTER_DROP at hook LOCAL_IN; 0 did, saw 2 × drop NO_SOCKET in "
	if res.Status != StatusFail || len(res.Regressions) != 1 || !strings.HasPrefix(res.Regressions[0], want) {
		t.Errorf("got %s %q, want the regression %q", res.Status, res.Regressions, want)
	}
}

// TestRunCleansUpOnError: a scenario whose rules fail to load is an error,
// and its namespaces are removed.
func TestRunCleansUpOnError(t *testing.T) {
	r := newTestRunner(t)
	s, err := ParseFile("testdata/broken-expectation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Rules = []Rule{{Netns: "server", Tool: ToolNftables, Ruleset: "table inet x { chain y { this is not nftables } }"}}
	res := r.Run(context.Background(), s)
	if res.Status != StatusError || !strings.Contains(res.Error, "setting up: rules[0] in server: nft -f -") {
		t.Errorf("got %s %q", res.Status, res.Error)
	}
	left, _ := filepath.Glob("/run/netns/" + NSPrefix + itoa(os.Getpid()) + "-*")
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %q", left)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
