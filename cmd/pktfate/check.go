package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/scenario"
	"github.com/pktfate/pktfate/tracer"
)

// checkConfig is everything `pktfate check` was asked to do.
type checkConfig struct {
	Baseline       string
	UpdateBaseline bool
	WriteBaseline  string
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
	fs.BoolVar(&cfg.UpdateBaseline, "update-baseline", false, "write the fates seen to the --baseline file (passing scenarios only), without comparing")
	fs.StringVar(&cfg.WriteBaseline, "write-baseline", "", "compare with --baseline and write it, updated with the scenarios that passed, to `FILE`")
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
	if cfg.UpdateBaseline && cfg.WriteBaseline != "" {
		return cfg, usageErrorf("--update-baseline writes the --baseline file: give it or --write-baseline FILE, not both")
	}
	return cfg, nil
}

// outputFile is an output file checked before anything runs: opened (or
// created) at once, written at the end, removed if it was created and
// nothing was written.
type outputFile struct {
	path    string
	f       *os.File
	created bool
}

func openOutput(flagName, path string) (*outputFile, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, usageErrorf("%s %s: cannot write it (%v): name a file in a folder that exists", flagName, path, err)
	}
	return &outputFile{path: path, f: f, created: errors.Is(statErr, os.ErrNotExist)}, nil
}

// write replaces the file's content and closes it.
func (o *outputFile) write(data []byte) error {
	if err := o.f.Truncate(0); err != nil {
		o.f.Close()
		return fmt.Errorf("writing %s: %w", o.path, err)
	}
	if _, err := o.f.WriteAt(data, 0); err != nil {
		o.f.Close()
		return fmt.Errorf("writing %s: %w", o.path, err)
	}
	return o.f.Close()
}

// discard closes the file unwritten (removing it if it was created).
func (o *outputFile) discard() {
	if o == nil || o.f == nil {
		return
	}
	o.f.Close()
	if o.created {
		os.Remove(o.path)
	}
}

// checkOutputs opens the output files asked for, so that a path that
// cannot be written is bad input before anything runs.
func checkOutputs(cfg checkConfig) (junit, baseline *outputFile, err error) {
	if cfg.JUnit != "" {
		if junit, err = openOutput("--junit", cfg.JUnit); err != nil {
			return nil, nil, err
		}
	}
	out, flagName := cfg.WriteBaseline, "--write-baseline"
	if cfg.UpdateBaseline {
		out, flagName = cfg.Baseline, "--baseline (with --update-baseline)"
	}
	if out != "" {
		if baseline, err = openOutput(flagName, out); err != nil {
			junit.discard()
			return nil, nil, err
		}
	}
	return junit, baseline, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// loadScenarios reads the scenarios and checks them against the running
// kernel: bad input (exit status 2) before anything runs.
func loadScenarios(paths []string, decoder *tracer.Decoder) ([]*scenario.Scenario, error) {
	var k *scenario.Kernel
	if decoder != nil {
		k = &scenario.Kernel{Release: kernelRelease(), Reasons: decoder.Reasons.Names()}
	}
	scenarios, err := scenario.Load(paths, k)
	if err != nil {
		return nil, usageErrorf("invalid scenario:\n%v", err)
	}
	return scenarios, nil
}

// allNetnsSources chooses the sources for scenarios that trace several
// namespaces: the ebpf source traces every namespace (its in-kernel filter
// takes one) and the netfilter attribution attaches in every one, the
// runner keeps the fates of the traced ones.
func allNetnsSources(cfg tracer.SelectConfig) scenario.AllSourceFunc {
	return func() ([]fate.Source, []fate.SourceStatus, error) {
		c := cfg
		c.Names, c.Optional = []string{tracer.SourceEBPF}, []string{tracer.SourceNF}
		c.Filters.Netns, c.NetnsPath = nil, ""
		c.Filters.Drops, c.Filters.Consumes = true, true
		sel, err := tracer.Select(c)
		if err != nil {
			return nil, nil, err
		}
		return sel.Sources, sel.Status, nil
	}
}

func runCheck(ctx context.Context, cfg checkConfig, stdout, stderr io.Writer) error {
	spec, specErr := tracer.KernelBTF()
	var decoder *tracer.Decoder
	if specErr == nil {
		var err error
		if decoder, err = tracer.DefaultDecoder(spec); err != nil {
			return err
		}
	}
	scenarios, err := loadScenarios(cfg.Paths, decoder)
	if err != nil {
		return err
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
	junitOut, baseOut, err := checkOutputs(cfg)
	if err != nil {
		return err
	}
	written := false
	defer func() {
		if !written {
			junitOut.discard()
			baseOut.discard()
		}
	}()
	if specErr != nil {
		return fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", specErr)
	}
	sel := tracer.SelectConfig{Kernel: spec, Decoder: decoder}
	runner, err := scenario.NewRunner(tracer.ForNetns(sel), tracer.MonoNow, decoder.Reasons.Names())
	if err != nil {
		return err
	}
	runner.AllSources = allNetnsSources(sel)
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
	written = true
	if junitOut != nil {
		var buf bytes.Buffer
		if err := scenario.WriteJUnit(&buf, kernel, results); err != nil {
			return err
		}
		if err := junitOut.write(buf.Bytes()); err != nil {
			return err
		}
	}
	if baseOut != nil {
		if base == nil {
			base = &scenario.Baseline{}
		}
		base.Update(kernel, results)
		data, err := base.Encode()
		if err != nil {
			return err
		}
		if err := baseOut.write(data); err != nil {
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

func printResult(w io.Writer, r *scenario.Result, verbose bool) {
	label := map[scenario.Status]string{scenario.StatusPass: "ok", scenario.StatusFail: "FAIL",
		scenario.StatusFlake: "FLAKY", scenario.StatusError: "ERROR", scenario.StatusGap: "GAP"}[r.Status]
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
	var gaps []string
	for _, g := range r.Gaps {
		gaps = append(gaps, g.String())
	}
	line("known gap", gaps)
	line("gap closed", r.GapsClosed)
	line("improvement", r.Improvements)
	line("change", r.Changes)
	if r.Status != scenario.StatusPass || verbose {
		line("note", r.Notes)
	}
}

// checkSummary is the last line of `pktfate check`.
type checkSummary struct {
	Type      string `json:"type"`
	Kernel    string `json:"kernel"`
	Scenarios int    `json:"scenarios"`
	Passed    int    `json:"passed"`
	Failed    int    `json:"failed"`
	Flaky     int    `json:"flaky"`
	Errors    int    `json:"errors"`
	// KnownGaps counts the scenarios that held but for known gaps,
	// GapsClosed the known gaps that held.
	KnownGaps    int  `json:"known_gaps"`
	GapsClosed   int  `json:"gaps_closed"`
	Improvements int  `json:"improvements"`
	Interrupted  bool `json:"interrupted,omitempty"`
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
		case scenario.StatusGap:
			s.KnownGaps++
		}
		s.Improvements += len(r.Improvements)
		s.GapsClosed += len(r.GapsClosed)
	}
	return s
}

func (s checkSummary) String() string {
	parts := []string{fmt.Sprintf("%d passed", s.Passed)}
	for _, p := range []struct {
		n    int
		what string
	}{{s.Failed, "failed (regression)"}, {s.Flaky, "flaky (passed only when run again)"}, {s.KnownGaps, "passed with known gaps"},
		{s.Errors, "could not run"}, {s.Improvements, "improvements"}, {s.GapsClosed, "gaps closed"}} {
		if p.n > 0 {
			what := p.what
			if p.n == 1 {
				what = strings.Replace(strings.TrimSuffix(what, "s"), "gaps closed", "gap closed", 1)
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
