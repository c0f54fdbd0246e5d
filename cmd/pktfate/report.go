package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/internal/report"
)

type reportConfig struct {
	OutputJSON bool
	Packets    bool
	Wide       bool
	UTC        bool
	Numeric    bool
	File       string
	Expr       string
}

func parseReport(args []string, stderr io.Writer) (reportConfig, error) {
	var cfg reportConfig
	fs := flag.NewFlagSet("pktfate report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&cfg.OutputJSON, "output-json", false, "print NDJSON: the summary as one line (and, with --packets, the packets' lines before it)")
	fs.BoolVar(&cfg.Packets, "packets", false, "list the packets first, as trace printed them (like tcpdump -r)")
	fs.BoolVar(&cfg.Packets, "l", false, "")
	fs.BoolVar(&cfg.Wide, "wide", false, "with --packets: every column")
	fs.BoolVar(&cfg.UTC, "utc", false, "with --packets: times in UTC (default: local time)")
	fs.BoolVar(&cfg.Numeric, "numeric", false, "with --packets: network namespaces as inode numbers, not names")
	fs.BoolVar(&cfg.Numeric, "n", false, "")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pktfate report [flags] FILE [pcap-filter expression]\n\n"+
			"Summarises a capture written by pktfate trace (--output-json --output-file, or\n"+
			"--output-pcapng) or a recording (--record, replayed through the correlator): the\n"+
			"same summary and tables as the live run. FILE - reads stdin. With --packets the\n"+
			"packets come first, as trace printed them; a trailing filter expression (tcpdump's\n"+
			"language) limits that list. It needs the packets' bytes: a pcapng or a recording.\n\n"+
			"Exit status: 0 the capture is complete, 3 it lost events, 4 whether it lost\n"+
			"events is unknown (no summary, an unreadable counter, damage, or the output was\n"+
			"closed before the end: report | head), 1 errors.\n\nFlags:\n")
		printFlags(stderr, fs, map[string]string{"packets": "l", "numeric": "n"})
	}
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	if fs.NArg() < 1 {
		return cfg, usageErrorf("report takes a capture file (NDJSON, pcapng or recording written by pktfate; - reads stdin)")
	}
	cfg.File = fs.Arg(0)
	cfg.Expr = strings.Join(fs.Args()[1:], " ")
	if cfg.Expr != "" && !cfg.Packets {
		return cfg, usageErrorf("report %s %s: a filter expression limits the packet list: add --packets (-l)", cfg.File, cfg.Expr)
	}
	return cfg, nil
}

// Exit statuses of pktfate report beyond 0 (complete), 1 (error or
// damage) and 2 (usage).
const (
	exitIncomplete = 3 // the capture lost events
	exitUnknown    = 4 // whether it lost events is unknown
)

// packetList lists a capture's packets as trace printed them: fate
// records when the capture correlated observers, else events. Events are
// held back until a fate record shows the capture correlated (then they
// are not listed, as trace's text showed only fates) or until too many
// came without one.
type packetList struct {
	r       render.Renderer
	filter  *pcapfilter.Filter
	expr    string
	held    []*fate.Event
	fates   bool // a fate record was read: only those are listed
	flushed bool // the held events were listed: events go out as they come
	// What was read and what was listed, of events and of fate records.
	seenEvents, listedEvents, seenFates, listedFates int
}

// holdEvents bounds the events held back waiting for a fate record (a
// live capture emits its first records within seconds).
const holdEvents = 100000

func (l *packetList) record(rec report.Record) error {
	e := rec.Event
	if l.filter != nil && e.Data == nil {
		return usageErrorf("a filter expression needs the packets' bytes, and NDJSON holds none: list the capture's pcapng (trace --output-pcapng) or its recording (--record), or leave out %q", l.expr)
	}
	match := l.filter == nil || l.filter.Match(e.EtherType, e.Data, e.MACHeader)
	if rec.Fate != nil {
		l.fates, l.held = true, nil
		l.seenFates++
		if !match {
			return nil
		}
		l.listedFates++
		return l.r.Fate(rec.Fate)
	}
	l.seenEvents++
	if !match || l.fates {
		return nil
	}
	l.listedEvents++
	if l.flushed {
		return l.r.Event(e)
	}
	l.held = append(l.held, e)
	if len(l.held) >= holdEvents {
		return l.flush()
	}
	return nil
}

// flush lists the events held back.
func (l *packetList) flush() error {
	l.flushed = true
	for _, e := range l.held {
		if err := l.r.Event(e); err != nil {
			return err
		}
	}
	l.held = nil
	return nil
}

// counts says how many packets were listed of how many.
func (l *packetList) counts() (listed, seen int) {
	if l.fates {
		return l.listedFates, l.seenFates
	}
	return l.listedEvents, l.seenEvents
}

func runReport(ctx context.Context, cfg reportConfig, stdout, stderr io.Writer) error {
	err := reportTo(ctx, cfg, stdout, stderr)
	if closed, rest := outputClosed(err); closed && rest == nil {
		// The reader went away (pktfate report | head): it has what it
		// read, as from cat. The status cannot say whether the capture
		// was complete: the report stopped before it knew.
		return &exitError{code: exitUnknown}
	} else if closed {
		return rest
	}
	return err
}

func reportTo(_ context.Context, cfg reportConfig, stdout, stderr io.Writer) error {
	var out render.Renderer
	var opt report.Options
	if cfg.OutputJSON {
		out = render.NewNDJSON(stdout)
	} else {
		t := newText(stdout, traceConfig{Wide: cfg.Wide, UTC: cfg.UTC, Numeric: cfg.Numeric}, 0)
		opt.Home = func(netns uint32) { t.HomeNetns = netns }
		out = t
	}
	var list *packetList
	if cfg.Packets {
		list = &packetList{r: out, expr: cfg.Expr}
		if cfg.Expr != "" {
			f, err := pcapfilter.Compile(cfg.Expr)
			if err != nil {
				return usageErrorf("%v", err)
			}
			list.filter = f
		}
		opt.Records = list.record
	}
	res, err := report.ReadFileWith(cfg.File, opt)
	if err != nil {
		return err
	}
	if list != nil && !list.fates && !list.flushed {
		if err := list.flush(); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if res.Format == "recording" && !cfg.OutputJSON {
		fmt.Fprintf(stdout, "\n%s is a recording (trace --record): its events were replayed through the correlator\n", cfg.File)
	}
	if list != nil && list.filter != nil && !cfg.OutputJSON {
		listed, seen := list.counts()
		fmt.Fprintf(stdout, "\n%d of %d packets listed (%s); the summary is the whole capture's\n", listed, seen, cfg.Expr)
	}
	if err := out.Summary(res.Summary); err != nil {
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
