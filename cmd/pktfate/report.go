package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

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
			"--output-pcapng): the same summary and tables as the live run.\n\nFlags:\n")
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

func runReport(_ context.Context, cfg reportConfig, stdout, stderr io.Writer) error {
	res, err := report.ReadFile(cfg.File)
	if err != nil {
		return err
	}
	var r render.Renderer = render.NewText(stdout)
	if cfg.OutputJSON {
		r = render.NewNDJSON(stdout)
	}
	if !res.HasSummary {
		fmt.Fprintf(stderr, "pktfate: %s ends before the capture's summary (the capture was killed or the file cut): losses unknown\n", cfg.File)
	}
	if err := r.Summary(res.Summary); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if res.Damage != nil {
		return fmt.Errorf("%s: %w; the report covers the %d records before it", cfg.File, res.Damage, res.Records)
	}
	return nil
}
