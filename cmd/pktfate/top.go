package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/tracer"
)

// topKey is one row of pktfate top: where and why packets are dropped.
type topKey struct {
	reason, location, hook string
}

// topRow is a row's counts.
type topRow struct {
	total uint64
	last  uint64 // total at the previous draw
	rate  float64
}

// topTable counts drops by reason, location and hook, as a renderer of
// the capture (events, or fate records when observers are joined), and
// draws them as a table. Its Renderer methods run on the capture's
// goroutines; draw on the refresh loop's.
type topTable struct {
	mu        sync.Mutex
	rows      map[topKey]*topRow
	drops     uint64
	consumed  uint64
	lastDrops uint64
	lastCons  uint64
	dropRate  float64
	consRate  float64
	lastDraw  time.Time
	started   time.Time
	observers []string
	expr      string
	stats     *capture.Stats

	out   io.Writer
	tty   *os.File // stdout when it is a terminal, else nil
	quit  chan struct{}
	done  chan struct{}
	final func(*fate.Summary) error // renders the summary at the end
	loc   *time.Location
}

func newTopTable(out io.Writer, cfg traceConfig, observers []string, stats *capture.Stats, home uint32) *topTable {
	t := &topTable{rows: map[topKey]*topRow{}, observers: observers, expr: cfg.Expr, stats: stats, out: out,
		quit: make(chan struct{}), done: make(chan struct{}), loc: time.Local}
	if cfg.UTC {
		t.loc = time.UTC
	}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		t.tty = f
	}
	text := newText(out, cfg, home)
	t.final = text.Summary
	return t
}

func (t *topTable) count(e *fate.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Fate != fate.FateDrop {
		t.consumed++
		return
	}
	t.drops++
	hook := e.Hook
	if hook != "" && e.Family != "" {
		hook = e.Family + " " + hook
	}
	k := topKey{reason: e.Reason, location: e.Location, hook: hook}
	r := t.rows[k]
	if r == nil {
		r = &topRow{}
		t.rows[k] = r
	}
	r.total++
}

// Event implements render.Renderer (a capture with one observer).
func (t *topTable) Event(e *fate.Event) error { t.count(e); return nil }

// Fate implements render.Renderer (observers joined: one count a packet).
func (t *topTable) Fate(f *fate.FateRecord) error { t.count(f.Event); return nil }

// Flush implements render.Renderer.
func (t *topTable) Flush() error { return nil }

// Summary implements render.Renderer: the last table stays on the screen,
// the summary follows it.
func (t *topTable) Summary(s *fate.Summary) error {
	t.stop()
	if t.tty != nil {
		fmt.Fprint(t.out, "\033[?25h") // the cursor back
	}
	if err := t.draw(false); err != nil {
		return err
	}
	return t.final(s)
}

// start redraws the table every interval until stop.
func (t *topTable) start(every time.Duration) {
	t.mu.Lock()
	t.started, t.lastDraw = time.Now(), time.Now()
	t.mu.Unlock()
	if t.tty != nil {
		fmt.Fprint(t.out, "\033[?25l") // no cursor blinking in the table
	}
	go func() {
		defer close(t.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		_ = t.draw(true)
		for {
			select {
			case <-t.quit:
				return
			case <-tk.C:
				if err := t.draw(true); err != nil {
					return
				}
			}
		}
	}()
}

func (t *topTable) stop() {
	select {
	case <-t.quit:
		return
	default:
	}
	close(t.quit)
	if !t.started.IsZero() {
		<-t.done
	}
}

// rates updates every rate since the last draw (t.mu held).
func (t *topTable) rates(now time.Time) {
	dt := now.Sub(t.lastDraw).Seconds()
	if dt <= 0 {
		return
	}
	for _, r := range t.rows {
		r.rate = float64(r.total-r.last) / dt
		r.last = r.total
	}
	t.dropRate, t.consRate = float64(t.drops-t.lastDrops)/dt, float64(t.consumed-t.lastCons)/dt
	t.lastDrops, t.lastCons, t.lastDraw = t.drops, t.consumed, now
}

// draw writes the table: on a terminal over the previous one (live) and
// cut to the screen's height; elsewhere one table after the other.
func (t *topTable) draw(live bool) error {
	t.mu.Lock()
	now := time.Now()
	if live || now.Sub(t.lastDraw) > 100*time.Millisecond {
		t.rates(now)
	}
	_, _, lost := t.stats.Snapshot()
	type row struct {
		topKey
		topRow
	}
	rows := make([]row, 0, len(t.rows))
	for k, r := range t.rows {
		rows = append(rows, row{k, *r})
	}
	drops, consumed, dropRate, consRate := t.drops, t.consumed, t.dropRate, t.consRate
	t.mu.Unlock()
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(b.rate, a.rate), cmp.Compare(b.total, a.total),
			strings.Compare(a.reason, b.reason), strings.Compare(a.location, b.location), strings.Compare(a.hook, b.hook))
	})
	height := 0
	if t.tty != nil {
		if _, h, err := term.GetSize(int(t.tty.Fd())); err == nil {
			height = h
		}
	}
	var b strings.Builder
	if t.tty != nil {
		b.WriteString("\033[H\033[2J") // over the previous table
	} else {
		b.WriteString("\n")
	}
	elapsed := now.Sub(t.started).Round(time.Second)
	fmt.Fprintf(&b, "pktfate top  %s  up %s  observers %s", now.In(t.loc).Format("15:04:05"), elapsed, strings.Join(t.observers, ", "))
	if t.expr != "" {
		fmt.Fprintf(&b, "  filter %q", t.expr)
	}
	fmt.Fprintf(&b, "\ndrops %d (%.1f/s)  consumed %d (%.1f/s)  lost %d\n\n", drops, dropRate, consumed, consRate, lost)
	fmt.Fprintf(&b, "%10s %10s  %-24s %-34s %s\n", "DROPS/s", "TOTAL", "REASON", "LOCATION", "HOOK")
	shown := len(rows)
	if height > 0 && live {
		shown = min(shown, max(height-5, 1))
	}
	for _, r := range rows[:shown] {
		fmt.Fprintf(&b, "%10.1f %10d  %-24s %-34s %s\n", r.rate, r.total, dash(r.reason), dash(r.location), r.hook)
	}
	if shown < len(rows) {
		fmt.Fprintf(&b, "(%d more rows: a taller terminal shows them)\n", len(rows)-shown)
	}
	if len(rows) == 0 {
		b.WriteString("(no drops yet)\n")
	}
	_, err := io.WriteString(t.out, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runTop(ctx context.Context, cfg traceConfig, stdout, stderr io.Writer) error {
	if cfg.ListReasons {
		return listReasons(stdout)
	}
	if cfg.ReadyFile != "" {
		if err := os.Remove(cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the old ready file: %w", err)
		}
	}
	setup, err := prepareTrace(cfg, stderr)
	if err != nil {
		return err
	}
	sel := setup.sel
	stats := &capture.Stats{}
	table := newTopTable(stdout, cfg, sel.Observers(), stats, setup.home)
	defer table.stop()
	var r render.Renderer = named{"stdout", table}
	_, err = capture.Run(ctx, capture.Config{
		Now:       tracer.MonoNow,
		Sources:   sel.Sources,
		Status:    sel.Status,
		Window:    cfg.Window,
		FatesOnly: true,
		Filter:    setup.filter,
		Reasons:   setup.reasons,
		Count:     cfg.Count,
		Duration:  cfg.Duration,
		Renderer:  r,
		Ready: func() error {
			table.start(cfg.Interval)
			return writeReady(cfg.ReadyFile)
		},
	}, stats)
	if closed, rest := outputClosed(err); closed {
		return rest
	}
	return err
}
