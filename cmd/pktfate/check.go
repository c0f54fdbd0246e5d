package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf/btf"
	"github.com/pktfate/pktfate/internal/scenario"
	"github.com/pktfate/pktfate/tracer"
)

// checkConfig is everything `pktfate check` was asked to do.
type checkConfig struct {
	Baseline       string
	UpdateBaseline bool
	JUnit          string
	OutputJSON     bool
	NoRetry        bool
	Verbose        bool
	Paths          []string
}

func parseCheck(args []string, stderr io.Writer) (checkConfig, error) {
	var cfg checkConfig
	fs := flag.NewFlagSet("pktfate check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Baseline, "baseline", "", "compare with the fates recorded in `FILE` (JSON, maybe from another kernel)")
	fs.BoolVar(&cfg.UpdateBaseline, "update-baseline", false, "write the fates seen to the --baseline file (passing scenarios only)")
	fs.StringVar(&cfg.JUnit, "junit", "", "also write the results as JUnit XML to `FILE`")
	fs.BoolVar(&cfg.OutputJSON, "output-json", false, "write NDJSON (one object per scenario, then a summary) instead of text")
	fs.BoolVar(&cfg.NoRetry, "no-retry", false, "do not run failing scenarios again (no flake detection)")
	fs.BoolVar(&cfg.Verbose, "v", false, "verbose: print progress, and the notes of passing scenarios")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pktfate check [flags] SCENARIO...\n\n"+
			"Runs fate scenarios (files, or directories of *.yaml files; see docs/scenarios.md),\n"+
			"each in its own network namespaces, and checks every packet met its expected fate.\n"+
			"Exit status: 0 all passed (flakes included), 1 a regression or a scenario that could\n"+
			"not run, 2 bad flags or an invalid scenario.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, usageErrorf("%v", err)
	}
	cfg.Paths = fs.Args()
	if len(cfg.Paths) == 0 {
		return cfg, usageErrorf("check needs scenario files or directories, such as testdata/scenarios")
	}
	if cfg.UpdateBaseline && cfg.Baseline == "" {
		return cfg, usageErrorf("--update-baseline needs --baseline FILE")
	}
	return cfg, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func runCheck(ctx context.Context, cfg checkConfig, stdout, stderr io.Writer) error {
	scenarios, err := scenario.Load(cfg.Paths)
	if err != nil {
		return usageErrorf("invalid scenario:\n%v", err)
	}
	var base *scenario.Baseline
	if cfg.Baseline != "" {
		base, err = scenario.ReadBaseline(cfg.Baseline)
		switch {
		case err == nil:
		case cfg.UpdateBaseline && errors.Is(err, os.ErrNotExist):
			base = nil // written from scratch
		default:
			return usageErrorf("%v", err)
		}
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	decoder, err := tracer.DefaultDecoder(spec)
	if err != nil {
		return err
	}
	runner, err := scenario.NewRunner(tracer.ForNetns(tracer.SelectConfig{Kernel: spec, Decoder: decoder}), tracer.MonoNow, decoder.Reasons.Names())
	if err != nil {
		return err
	}
	runner.Retry = !cfg.NoRetry
	if !cfg.UpdateBaseline {
		runner.Baseline = base
	}
	if cfg.Verbose {
		runner.Log = stderr
	}
	kernel := kernelRelease()
	var enc *json.Encoder
	if cfg.OutputJSON {
		enc = json.NewEncoder(stdout)
	} else {
		fmt.Fprintf(stdout, "pktfate check: %s on kernel %s\n", plural(len(scenarios), "scenario"), kernel)
	}
	results := runner.RunAll(ctx, scenarios, func(r *scenario.Result) {
		if enc != nil {
			enc.Encode(struct {
				Type string `json:"type"`
				*scenario.Result
			}{"scenario", r})
			return
		}
		printResult(stdout, r, cfg.Verbose)
	})
	sum := summarise(results, kernel)
	if ctx.Err() != nil {
		sum.Interrupted = true
	}
	if enc != nil {
		enc.Encode(sum)
	} else {
		fmt.Fprintf(stdout, "\n%s\n", sum)
	}
	if cfg.JUnit != "" {
		if err := writeJUnit(cfg.JUnit, kernel, results); err != nil {
			return err
		}
	}
	if cfg.UpdateBaseline {
		if base == nil {
			base = &scenario.Baseline{}
		}
		base.Update(kernel, results)
		if err := base.Write(cfg.Baseline); err != nil {
			return err
		}
	}
	switch {
	case sum.Interrupted:
		return errors.New("interrupted")
	case sum.Failed+sum.Errors > 0:
		return fmt.Errorf("%d of %s failed", sum.Failed+sum.Errors, plural(sum.Scenarios, "scenario"))
	}
	return nil
}

func writeJUnit(path, kernel string, results []*scenario.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("JUnit output file not writable: %w", err)
	}
	if err := scenario.WriteJUnit(f, kernel, results); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printResult(w io.Writer, r *scenario.Result, verbose bool) {
	label := map[scenario.Status]string{scenario.StatusPass: "ok", scenario.StatusFail: "FAIL",
		scenario.StatusFlake: "FLAKY", scenario.StatusError: "ERROR"}[r.Status]
	fmt.Fprintf(w, "%-5s %-36s %5.1fs\n", label, r.Name, r.Seconds)
	line := func(kind string, items []string) {
		for _, s := range items {
			fmt.Fprintf(w, "      %s: %s\n", kind, s)
		}
	}
	if r.Error != "" {
		line("error", []string{r.Error})
	}
	line("regression", r.Regressions)
	line("first attempt", r.FirstAttempt)
	line("improvement", r.Improvements)
	line("change", r.Changes)
	if r.Status != scenario.StatusPass || verbose {
		line("note", r.Notes)
	}
}

// checkSummary is the last line of `pktfate check`.
type checkSummary struct {
	Type         string `json:"type"`
	Kernel       string `json:"kernel"`
	Scenarios    int    `json:"scenarios"`
	Passed       int    `json:"passed"`
	Failed       int    `json:"failed"`
	Flaky        int    `json:"flaky"`
	Errors       int    `json:"errors"`
	Improvements int    `json:"improvements"`
	Interrupted  bool   `json:"interrupted,omitempty"`
}

func summarise(results []*scenario.Result, kernel string) checkSummary {
	s := checkSummary{Type: "summary", Kernel: kernel, Scenarios: len(results)}
	for _, r := range results {
		switch r.Status {
		case scenario.StatusPass:
			s.Passed++
		case scenario.StatusFail:
			s.Failed++
		case scenario.StatusFlake:
			s.Flaky++
		case scenario.StatusError:
			s.Errors++
		}
		s.Improvements += len(r.Improvements)
	}
	return s
}

func (s checkSummary) String() string {
	parts := []string{fmt.Sprintf("%d passed", s.Passed)}
	for _, p := range []struct {
		n    int
		what string
	}{{s.Failed, "failed (regression)"}, {s.Flaky, "flaky"}, {s.Errors, "could not run"}, {s.Improvements, "improvements"}} {
		if p.n > 0 {
			what := p.what
			if p.n == 1 {
				what = strings.TrimSuffix(what, "s")
			}
			parts = append(parts, fmt.Sprintf("%d %s", p.n, what))
		}
	}
	out := fmt.Sprintf("%s: %s", plural(s.Scenarios, "scenario"), strings.Join(parts, ", "))
	if s.Interrupted {
		out += " (interrupted)"
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
