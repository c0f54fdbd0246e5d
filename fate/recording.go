package fate

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// A recording is the input of a Correlator, step by step, as JSON lines:
// a config line first, then every event with its captured bytes, every
// loss interval, every clock tick and the final flush, in the order the
// correlator received them. Replaying it into a new Correlator yields the
// same fate records, which makes a capture's correlation reproducible
// offline (`pktfate trace --record FILE`) and gives the tests recorded
// multi-source streams from real kernels (testdata/streams).

// Step ops.
const (
	StepConfig  = "config"
	StepEvent   = "event"
	StepLoss    = "loss"
	StepAdvance = "advance"
	StepFlush   = "flush"
)

// Step is one line of a recording.
type Step struct {
	Op string `json:"op"`
	// Config: the observers running and the window.
	Running []string      `json:"running,omitempty"`
	Window  time.Duration `json:"window,omitempty"`
	// Event: the event as the correlator received it.
	Event *Event `json:"event,omitempty"`
	// Loss: Observer lost events between From and To (monotonic ns).
	Observer string `json:"observer,omitempty"`
	From     uint64 `json:"from,omitempty"`
	To       uint64 `json:"to,omitempty"`
	// Advance: the correlator's clock (monotonic ns).
	Now uint64 `json:"now,omitempty"`
}

// Recorder writes a recording. Set it as CorrelatorConfig.Record; the
// first write error stops it and is kept for Err.
type Recorder struct {
	w   *bufio.Writer
	err error
}

// NewRecorder returns a Recorder writing to w.
func NewRecorder(w io.Writer) *Recorder { return &Recorder{w: bufio.NewWriterSize(w, 64<<10)} }

func (r *Recorder) write(s *Step) {
	if r == nil || r.err != nil {
		return
	}
	b, err := json.Marshal(s)
	if err == nil {
		b = append(b, '\n')
		_, err = r.w.Write(b)
	}
	r.err = err
}

// Flush writes out what is buffered and returns the first error.
func (r *Recorder) Flush() error {
	if r.err == nil {
		r.err = r.w.Flush()
	}
	return r.err
}

// Recording is a recording read back.
type Recording struct {
	Running []string
	Window  time.Duration
	Steps   []Step // without the config line
}

// ReadRecording reads a recording. A line that is not a step names its
// number; what was read before it is returned with the error.
func ReadRecording(r io.Reader) (*Recording, error) {
	rec := &Recording{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var s Step
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return rec, fmt.Errorf("recording line %d: %w", n, err)
		}
		switch s.Op {
		case StepConfig:
			if n != 1 {
				return rec, fmt.Errorf("recording line %d: a second config line", n)
			}
			rec.Running, rec.Window = s.Running, s.Window
			continue
		case StepEvent:
			if s.Event == nil {
				return rec, fmt.Errorf("recording line %d: an event step without its event", n)
			}
		case StepLoss, StepAdvance, StepFlush:
		default:
			return rec, fmt.Errorf("recording line %d: unknown op %q", n, s.Op)
		}
		if n == 1 {
			return rec, errors.New("recording line 1: not a config line: is this a pktfate --record file?")
		}
		rec.Steps = append(rec.Steps, s)
	}
	return rec, sc.Err()
}

// Config returns the correlator configuration the recording was made with.
func (rec *Recording) Config() CorrelatorConfig {
	return CorrelatorConfig{Running: rec.Running, Window: rec.Window}
}

// Replay feeds the steps into c.
func (rec *Recording) Replay(c *Correlator) {
	for i := range rec.Steps {
		s := &rec.Steps[i]
		switch s.Op {
		case StepEvent:
			c.Add(s.Event)
		case StepLoss:
			c.NoteLoss(s.Observer, s.From, s.To)
		case StepAdvance:
			c.Advance(s.Now)
		case StepFlush:
			c.Flush()
		}
	}
}
