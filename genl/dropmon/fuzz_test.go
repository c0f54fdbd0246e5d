package dropmon

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/mdlayher/netlink"
)

// addFixtures seeds a fuzz target with every fixture (hand-built, recorded
// and malformed), whole messages and their attributes alone.
func addFixtures(f *testing.F) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*", "*.hex"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, p := range files {
		b := readHex(f, p)
		f.Add(b)
		if len(b) > nlmsgHeaderLen+genlHeaderLen {
			f.Add(b[nlmsgHeaderLen+genlHeaderLen:])
		}
	}
}

// checkBounded fails when decoding b kept more than b holds: the decoders
// copy strings and payloads out of the input and allocate nothing in
// proportion to what a length field claims.
func checkBounded(t *testing.T, b []byte, a *Alert) {
	p := &a.Packet
	held := len(p.Payload) + len(p.FlowActionCookie) + len(p.Symbol) + len(p.Reason) + len(p.Ifname) +
		len(p.HWTrapGroup) + len(p.HWTrapName) + dropPointLen*len(a.Summary.Drops)
	for _, h := range a.Summary.HW {
		held += len(h.TrapName)
	}
	if held > len(b) {
		t.Fatalf("decoded %d bytes of data out of %d input bytes", held, len(b))
	}
}

func FuzzParsePacketAlert(f *testing.F) {
	addFixtures(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Alert
		// As a whole message...
		if _, err := ParseMessage(b, &a); err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnexpected) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrUnexpected: %v", err)
			}
		} else {
			checkBounded(t, b, &a)
		}
		// ...and as the attributes of a packet alert.
		a = Alert{}
		if err := parsePacketAlert(b, &a.Packet); err == nil {
			checkBounded(t, b, &a)
			if uint64(len(a.Packet.Payload)) > uint64(a.Packet.OrigLen) {
				t.Fatalf("accepted a payload longer than the packet")
			}
		}
	})
}

func FuzzParseSummaryAlert(f *testing.F) {
	addFixtures(f)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Alert
		// The legacy struct alone...
		drops, err := decodeAlertMsg(b, nil)
		if err == nil && dropPointLen*len(drops) > len(b) {
			t.Fatalf("%d drop points out of %d bytes", len(drops), len(b))
		}
		// ...and as the attributes of a summary alert.
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return
		}
		if err := parseSummaryAlert(ad, &a.Summary); err == nil {
			checkBounded(t, b, &a)
		}
	})
}
