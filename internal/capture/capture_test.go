package capture

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
)

// fakeSource replays events, then waits for ctx like a live source.
type fakeSource struct {
	observer         string // "fake" when empty
	events           []fate.Event
	lost             uint64
	startErr, runErr error
	started, closed  bool
	observers        []string // default: "fake"
}

func (f *fakeSource) Name() string { return "fake" }
func (f *fakeSource) Observers() []string {
	if f.observers != nil {
		return f.observers
	}
	return []string{f.obs()}
}
func (f *fakeSource) CanRun(fate.Filters) error             { return nil }
func (f *fakeSource) Blind(string, *fate.FateRecord) string { return "" }
func (f *fakeSource) Start() error                          { f.started = true; return f.startErr }
func (f *fakeSource) Close() error                          { f.closed = true; return nil }
func (f *fakeSource) Losses() []fate.Loss {
	return []fate.Loss{{Observer: f.obs(), Name: "lost", Value: f.lost}}
}
func (f *fakeSource) obs() string {
	if f.observer == "" {
		return "fake"
	}
	return f.observer
}
func (f *fakeSource) Run(ctx context.Context, h fate.Sink) error {
	for i := range f.events {
		e := f.events[i]
		h.Event(&e)
	}
	if f.runErr != nil {
		return f.runErr
	}
	<-ctx.Done()
	return nil
}

// udp4 returns an event carrying a real IPv4/UDP header to dport.
func udp4(f fate.Fate, reason string, dport uint16) fate.Event {
	data := make([]byte, 28)
	data[0], data[9] = 0x45, 17
	data[2], data[3] = 0, 28
	copy(data[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	data[20], data[21] = 0x9c, 0x40
	data[22], data[23] = byte(dport>>8), byte(dport)
	data[25] = 8
	return fate.Event{Source: "fake", Fate: f, Reason: reason, Location: "f+0x1", EtherType: 0x0800, Data: data,
		Time: time.Unix(1700000000, 0),
		Packet: fate.Packet{Proto: "udp", Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
			Sport: 40000, Dport: dport}}
}

func run(t *testing.T, cfg Config, src *fakeSource) (*fate.Summary, string, error) {
	t.Helper()
	var out bytes.Buffer
	cfg.Sources = []fate.Source{src}
	cfg.Renderer = render.NewNDJSON(&out)
	cfg.Now = testNow
	if cfg.Duration == 0 && cfg.Count == 0 {
		cfg.Duration = 100 * time.Millisecond
	}
	sum, err := Run(context.Background(), cfg, nil)
	return sum, out.String(), err
}

func TestFiltersCountAndSummary(t *testing.T) {
	src := &fakeSource{lost: 7, events: []fate.Event{
		udp4(fate.FateDrop, "NO_SOCKET", 9),
		udp4(fate.FateDrop, "NETFILTER_DROP", 53),
		udp4(fate.FateConsume, "", 9),
		udp4(fate.FateDrop, "NO_SOCKET", 9),
		{Source: "fake", Fate: fate.FateDrop, Reason: "NO_SOCKET", Len: 40}, // no bytes: the filter cannot judge it
	}}
	f, err := pcapfilter.Compile("udp port 9")
	if err != nil {
		t.Fatal(err)
	}
	sum, out, err := run(t, Config{Filter: f}, src)
	if err != nil {
		t.Fatal(err)
	}
	if !src.started || !src.closed {
		t.Error("source not started and closed")
	}
	if sum.Events != 3 || sum.Drops != 2 || sum.Consumed != 1 || sum.ByReason["NO_SOCKET"] != 2 || sum.ByReason["NETFILTER_DROP"] != 0 {
		t.Errorf("summary %+v: the port-53 packet must be filtered out", sum)
	}
	if sum.TotalLost() != 8 || !strings.Contains(out, `"lost":[{"observer":"fake","name":"lost","value":7},{"observer":"fake","name":"filter_no_bytes","value":1}]`) {
		t.Errorf("losses not reported: %v\n%s", sum.Lost, out)
	}
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d lines, want 3 events + summary:\n%s", n, out)
	}

	// A reason filter keeps only the drops with those reasons (no
	// consume: it has no drop reason), and Count stops the capture by
	// itself.
	sum, _, err = run(t, Config{Reasons: map[string]bool{"NO_SOCKET": true}, Count: 2}, src)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 2 || sum.ByReason["NO_SOCKET"] != 2 || sum.Consumed != 0 || sum.ByReason["NETFILTER_DROP"] != 0 {
		t.Errorf("reason filter + count: %+v", sum)
	}
}

func TestSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	src := &fakeSource{startErr: boom}
	if _, _, err := run(t, Config{}, src); !errors.Is(err, boom) || !strings.Contains(err.Error(), "starting source fake") {
		t.Errorf("start error: %v", err)
	}
	if !src.closed {
		t.Error("source whose Start failed was not closed")
	}
	src = &fakeSource{runErr: boom, events: []fate.Event{udp4(fate.FateDrop, "NO_SOCKET", 9)}}
	if _, _, err := run(t, Config{Duration: time.Hour}, src); !errors.Is(err, boom) {
		t.Errorf("run error: %v", err)
	}
	if _, err := Run(context.Background(), Config{}, nil); err == nil {
		t.Error("no sources: want an error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestOutputErrorStops(t *testing.T) {
	src := &fakeSource{events: []fate.Event{udp4(fate.FateDrop, "NO_SOCKET", 9)}}
	_, err := Run(context.Background(), Config{Sources: []fate.Source{src}, Renderer: render.NewNDJSON(failWriter{}),
		Now: testNow, Duration: time.Hour, FlushEvery: time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("write error not reported: %v", err)
	}
}

// TestRecordingErrorStops: a recording that cannot be written stops the
// capture at the next tick, like an output; the outputs that work get the
// summary.
func TestRecordingErrorStops(t *testing.T) {
	src := &fakeSource{observers: []string{"fake", "fake2"}, events: []fate.Event{udp4(fate.FateDrop, "NO_SOCKET", 9)}}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Config{Sources: []fate.Source{src}, Renderer: render.NewNDJSON(&out),
			Record: fate.NewRecorder(failWriter{}), Now: testNow, Duration: time.Hour, FlushEvery: time.Millisecond}, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "writing output: disk full") || strings.Count(err.Error(), "disk full") != 1 {
			t.Errorf("recording error: %v, want it once", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a failing recording did not stop the capture")
	}
	if !strings.Contains(out.String(), `"type":"summary"`) {
		t.Errorf("no summary on the working output:\n%s", out.String())
	}
}

var testEpoch = time.Now()

// testNow is the capture's clock in these tests.
func testNow() uint64 { return uint64(time.Since(testEpoch)) }

// TestCopiesAreNotFates: a consume that leaves the packet's data with
// another skb (a kernel clone, a tap's copy) is counted as a copy, never
// shown as the packet's fate; the packet's own drop is.
func TestCopiesAreNotFates(t *testing.T) {
	drop := udp4(fate.FateDrop, "NO_SOCKET", 9)
	clone := udp4(fate.FateConsume, "", 9)
	clone.DataShared = true
	tap := udp4(fate.FateConsume, "", 9)
	tap.SockFamily = 17 // AF_PACKET
	sum, out, err := run(t, Config{}, &fakeSource{events: []fate.Event{clone, tap, drop}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 1 || sum.Drops != 1 || sum.Consumed != 0 || sum.Ignored["copies_released"] != 2 {
		t.Errorf("events %d drops %d consumed %d ignored %v, want the drop alone and 2 copies", sum.Events, sum.Drops, sum.Consumed, sum.Ignored)
	}
	if strings.Count(out, `"type":"event"`) != 1 {
		t.Errorf("copies rendered:\n%s", out)
	}
}

// TestOnTick: a capture that never ends shows its ledger while it runs:
// every tick passes the loss counters just read, and with two observers
// the correlator's statistics.
func TestOnTick(t *testing.T) {
	for _, srcs := range [][]*fakeSource{
		{{lost: 7}},
		{{observer: "a", lost: 7}, {observer: "b"}},
	} {
		ticks := make(chan Tick, 1)
		cfg := Config{Renderer: render.NewNDJSON(&bytes.Buffer{}), Now: testNow, FlushEvery: time.Millisecond,
			OnTick: func(tk Tick) {
				select {
				case ticks <- Tick{Losses: append([]fate.Loss(nil), tk.Losses...), Correlation: tk.Correlation}:
				default:
				}
			}}
		for _, s := range srcs {
			cfg.Sources = append(cfg.Sources, s)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := Run(ctx, cfg, nil); done <- err }()
		var tk Tick
		select {
		case tk = <-ticks:
		case <-time.After(10 * time.Second):
			t.Fatal("no tick within 10s")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(tk.Losses) != len(srcs) || tk.Losses[0].Value != 7 || tk.Losses[0].Observer != srcs[0].obs() {
			t.Errorf("%d sources: tick losses %+v, want one counter per source, the first 7", len(srcs), tk.Losses)
		}
		if correlated := tk.Correlation != nil; correlated != (len(srcs) > 1) {
			t.Errorf("%d sources: correlation stats %v", len(srcs), tk.Correlation)
		}
		if tk.Correlation != nil && len(tk.Correlation.Observers) != 2 {
			t.Errorf("correlator observers %v, want a and b", tk.Correlation.Observers)
		}
	}
}

// TestTCPSharedIsAFate: a TCP segment received over a veth shares its
// buffer with the sender's retransmit queue; its consume is the segment's
// own fate, not a copy's.
func TestTCPSharedIsAFate(t *testing.T) {
	seg := udp4(fate.FateConsume, "", 80)
	seg.Packet.Proto, seg.DataShared = "tcp", true
	sum, _, err := run(t, Config{}, &fakeSource{events: []fate.Event{seg}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Consumed != 1 || sum.Ignored["copies_released"] != 0 {
		t.Errorf("consumed %d, ignored %v: the TCP segment must count", sum.Consumed, sum.Ignored)
	}
}
