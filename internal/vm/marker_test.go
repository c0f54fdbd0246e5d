package vm

import (
	"bufio"
	"strings"
	"testing"
)

// scanConsole feeds a console capture to a MarkerScanner line by line, as
// Boot does (the last line may lack its newline).
func scanConsole(console string) (int, bool) {
	var m MarkerScanner
	sc := bufio.NewScanner(strings.NewReader(console))
	for sc.Scan() {
		m.Feed(strings.TrimRight(sc.Text(), "\r"))
	}
	return m.Result()
}

func TestMarkerFromConsole(t *testing.T) {
	tests := []struct {
		name    string
		console string
		rc      int
		found   bool
	}{
		{"console and kmsg", "=== RUN TestX\r\n--- PASS\r\n[    6.17] PKTFATE-VM-RESULT rc=0 END\r\nPKTFATE-VM-RESULT rc=0 END\r\n[    6.41] reboot: Power down\r\n", 0, true},
		{"failure status", "--- FAIL: TestX\n[    7.3] PKTFATE-VM-RESULT rc=1 END\nPKTFATE-VM-RESULT rc=1 END\n", 1, true},
		{"console copy cut by poweroff, kmsg copy complete", "[    7.3] PKTFATE-VM-RESULT rc=12 END\nPKTFATE-VM-RESULT rc=1", 12, true},
		{"only in kmsg output", "ok\n[   12.000001] PKTFATE-VM-RESULT rc=4 END\n[   12.2] reboot: Power down\n", 4, true},
		{"only a cut marker", "--- PASS: TestX\nPKTFATE-VM-RESULT rc=1", 0, false},
		{"cut before END", "PKTFATE-VM-RESULT rc=0 EN\n", 0, false},
		{"no marker: kernel panic", "Kernel panic - not syncing: Attempted to kill init!\n", 0, false},
		{"marker inside noise", "\x1b[0mfoo PKTFATE-VM-RESULT rc=3 END bar\n", 3, true},
		{"out of range", "PKTFATE-VM-RESULT rc=999 END\n", 0, false},
		{"first marker wins", "PKTFATE-VM-RESULT rc=2 END\nPKTFATE-VM-RESULT rc=0 END\n", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, found := scanConsole(tt.console)
			if rc != tt.rc || found != tt.found {
				t.Errorf("got rc=%d found=%v, want rc=%d found=%v", rc, found, tt.rc, tt.found)
			}
		})
	}
}

func TestMarkerLineRoundTrip(t *testing.T) {
	for _, rc := range []int{0, 1, 4, 255} {
		got, ok := ParseMarker(markerLine(rc, "12288"))
		if !ok || got != rc {
			t.Errorf("ParseMarker(markerLine(%d)) = %d, %v", rc, got, ok)
		}
	}
	if !strings.Contains(initScript, `echo "<2>`+markerPrefix+` rc=$rc taint=$taint END" > /dev/kmsg`) {
		t.Error("/init does not write the marker to /dev/kmsg in the format ParseMarker reads")
	}
}

func TestCopyConsolePrefixesAndFindsMarker(t *testing.T) {
	var out strings.Builder
	console := "SeaBIOS\r\n=== RUN   TestX\r\n[    7.3] PKTFATE-VM-RESULT rc=1 END\r\nPKTFATE-VM-RESULT rc=1 END\r\nreboot: Power down"
	res := copyConsole(strings.NewReader(console), BootSpec{Prefix: "[6.1] ", Out: &out}, nil)
	if !res.Reported || res.RC != 1 {
		t.Errorf("result = %+v, want reported rc=1", res)
	}
	want := "[6.1] SeaBIOS\n[6.1] === RUN   TestX\n[6.1] [    7.3] PKTFATE-VM-RESULT rc=1 END\n[6.1] PKTFATE-VM-RESULT rc=1 END\n[6.1] reboot: Power down\n"
	if out.String() != want {
		t.Errorf("console copy =\n%q\nwant\n%q", out.String(), want)
	}
	if len(res.Tail) != 5 || res.Tail[4] != "reboot: Power down" {
		t.Errorf("tail = %q", res.Tail)
	}
}
