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

// Step is one step of a recording.
type Step struct {
	Op string
	// Config: the observers running and the window.
	Running []string
	Window  time.Duration
	// Event: the event as the correlator received it.
	Event *Event
	// Loss: Observer lost events between From and To (monotonic ns).
	Observer string
	From, To uint64
	// Advance: the correlator's clock (monotonic ns).
	Now uint64
}

// stepLine is a Step in the file (schema version 1): the event as the
// schema's EventLine with the recording-only fields.
type stepLine struct {
	Op       string        `json:"op"`
	Schema   int           `json:"schema,omitempty"`
	Running  []string      `json:"running,omitempty"`
	Window   time.Duration `json:"window,omitempty"`
	Event    *EventLine    `json:"event,omitempty"`
	Observer string        `json:"observer,omitempty"`
	From     uint64        `json:"from,omitempty"`
	To       uint64        `json:"to,omitempty"`
	Now      uint64        `json:"now,omitempty"`
}

// stepV0 is a step as recordings without a schema version hold it: the
// event with Go's field names (Fate a number, Packet nested).
type stepV0 struct {
	Op       string        `json:"op"`
	Running  []string      `json:"running"`
	Window   time.Duration `json:"window"`
	Event    *eventV0      `json:"event"`
	Observer string        `json:"observer"`
	From     uint64        `json:"from"`
	To       uint64        `json:"to"`
	Now      uint64        `json:"now"`
}

// eventV0 is the layout of Event in version 0 recordings.
type eventV0 struct {
	Source                string
	Mono                  uint64
	Time                  time.Time
	CPU                   uint32
	Skb                   uint64
	Fate                  Fate
	ReasonCode            uint32
	Reason                string
	LocationAddr          uint64
	Location              string
	Netns, Ifindex        uint32
	Ifname                string
	Mark, Len             uint32
	EtherType             uint16
	Data                  []byte
	MACHeader, HadMAC     bool
	Hook, Family, Verdict string
	Packet                Packet
}

func (v *eventV0) event() *Event {
	return &Event{Source: v.Source, Mono: v.Mono, Time: v.Time, CPU: v.CPU, Skb: v.Skb, Fate: v.Fate,
		ReasonCode: v.ReasonCode, Reason: v.Reason, LocationAddr: v.LocationAddr, Location: v.Location,
		Netns: v.Netns, Ifindex: v.Ifindex, Ifname: v.Ifname, Mark: v.Mark, Len: v.Len, EtherType: v.EtherType,
		Data: v.Data, MACHeader: v.MACHeader, HadMAC: v.HadMAC, Hook: v.Hook, Family: v.Family, Verdict: v.Verdict,
		Packet: v.Packet}
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
	l := stepLine{Op: s.Op, Running: s.Running, Window: s.Window, Observer: s.Observer, From: s.From, To: s.To, Now: s.Now}
	if s.Op == StepConfig {
		l.Schema = SchemaVersion
	}
	if s.Event != nil {
		ev := RecordedEventLine(s.Event)
		l.Event = &ev
	}
	b, err := json.Marshal(&l)
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

// ReadRecording reads a recording, of any schema version. A line that is
// not a step names its number; what was read before it is returned with
// the error.
func ReadRecording(r io.Reader) (*Recording, error) {
	rec := &Recording{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	version := -1
	for n := 1; sc.Scan(); n++ {
		s, err := readStep(sc.Bytes(), version)
		if err != nil {
			return rec, fmt.Errorf("recording line %d: %w", n, err)
		}
		switch s.Op {
		case StepConfig:
			if n != 1 {
				return rec, fmt.Errorf("recording line %d: a second config line", n)
			}
			var v struct {
				Schema int `json:"schema"`
			}
			_ = json.Unmarshal(sc.Bytes(), &v)
			if v.Schema > SchemaVersion {
				return rec, fmt.Errorf("recording line 1: schema version %d is newer than this pktfate reads (%d): update pktfate", v.Schema, SchemaVersion)
			}
			version = v.Schema
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
		rec.Steps = append(rec.Steps, *s)
	}
	return rec, sc.Err()
}

// readStep decodes one line written with the given schema version (-1
// before the config line says).
func readStep(b []byte, version int) (*Step, error) {
	if version <= 0 {
		var v stepV0
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		s := &Step{Op: v.Op, Running: v.Running, Window: v.Window, Observer: v.Observer, From: v.From, To: v.To, Now: v.Now}
		if v.Event != nil {
			s.Event = v.Event.event()
		}
		return s, nil
	}
	var l stepLine
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, err
	}
	s := &Step{Op: l.Op, Running: l.Running, Window: l.Window, Observer: l.Observer, From: l.From, To: l.To, Now: l.Now}
	if l.Event != nil {
		e, err := l.Event.Event()
		if err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		s.Event = e
	}
	return s, nil
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
