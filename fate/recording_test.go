package fate

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestRecordingRoundTrip: what a correlator records replays into a new one
// with the same records, losses and clock ticks included.
func TestRecordingRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	rec := NewRecorder(&buf)
	cfg := CorrelatorConfig{Running: running("ebpf", "dropmon", "kmod"), Record: rec}
	live, liveOut := collect(cfg)
	live.Add(ebpfDrop(100*ms, 0xa, 1000, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	live.Add(dropmonDrop(101*ms, 1000, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	live.NoteLoss(ObserverDropmon, 290*ms, 310*ms)
	live.Add(ebpfDrop(300*ms, 0xb, 1001, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	live.Advance(900 * ms)
	live.Add(dropmonDrop(305*ms, 1002, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"))
	live.Flush()
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := ReadRecording(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 7 || r.Window != live.cfg.Window {
		t.Fatalf("%d steps, window %v: %s", len(r.Steps), r.Window, buf.String())
	}
	again, againOut := collect(r.Config())
	r.Replay(again)
	if len(*liveOut) != 3 || !reflect.DeepEqual(*liveOut, *againOut) {
		t.Fatalf("live %+v\nreplayed %+v", *liveOut, *againOut)
	}
	if o := *liveOut; o[0].verdict != VerdictConfirmed || o[1].observers["dropmon"] != StatusLost || !o[2].late {
		t.Errorf("confirmed, lost, late: got %+v", o)
	}
}

// TestReadRecordingErrors: a damaged recording names the line and keeps
// what came before it.
func TestReadRecordingErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"op":"event","event":{}}` + "\n", "line 1: not a config line"},
		{`{"op":"config"}` + "\n" + `{"op":"advance","now":5}` + "\n" + `{"op":"ev`, "line 3"},
		{`{"op":"config"}` + "\n" + `{"op":"event"}` + "\n", "line 2: an event step without its event"},
		{`{"op":"config"}` + "\n" + `{"op":"dance"}` + "\n", `line 2: unknown op "dance"`},
		{`{"op":"config"}` + "\n" + `{"op":"config"}` + "\n", "line 2: a second config line"},
	} {
		r, err := ReadRecording(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
		if c.want == "line 3" && (r == nil || len(r.Steps) != 1) {
			t.Errorf("%q: kept %+v, want the step before the damage", c.in, r)
		}
	}
}
