package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/internal/report"
)

type reportConfig struct {
	OutputJSON bool
	File       string
}

func parseReport(args []string, stderr io.Writer) (reportConfig, error) {
	var cfg reportConfig
	fs := flag.NewFlagSet("pktfate report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&cfg.OutputJSON, "output-json", false, "print the summary as one NDJSON line")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pktfate report [flags] FILE\n\n"+
			"Summarises a capture written by pktfate trace (--output-json --output-file, or\n"+
			"--output-pcapng) or a recording (--record): the same summary and tables as\n"+
			"the live run. FILE - reads stdin.\n\n"+
			"Exit status: 0 the capture is complete, 3 it lost events, 4 whether it lost\n"+
			"events is unknown (no summary, an unreadable counter, damage), 1 errors.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, usageErrorf("%v", err)
	}
	if fs.NArg() != 1 {
		return cfg, usageErrorf("report takes one capture file (NDJSON or pcapng written by pktfate)")
	}
	cfg.File = fs.Arg(0)
	return cfg, nil
}

// Exit statuses of pktfate report beyond 0 (complete), 1 (error or
// damage) and 2 (usage).
const (
	exitIncomplete = 3 // the capture lost events
	exitUnknown    = 4 // whether it lost events is unknown
)

func runReport(_ context.Context, cfg reportConfig, stdout, stderr io.Writer) error {
	res, err := report.ReadFile(cfg.File)
	if err != nil {
		return err
	}
	var r render.Renderer = render.NewText(stdout)
	if cfg.OutputJSON {
		r = render.NewNDJSON(stdout)
	}
	if err := r.Summary(res.Summary); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if err := res.DamageError(); err != nil {
		return fmt.Errorf("%s: %w; the report covers the %d records that could be read", cfg.File, err, res.Records)
	}
	switch res.Summary.Completeness() {
	case fate.Incomplete:
		return &exitError{code: exitIncomplete}
	case fate.CompletenessUnknown:
		return &exitError{code: exitUnknown}
	}
	return nil
}
