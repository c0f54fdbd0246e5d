package vm

import (
	"fmt"
	"regexp"
	"strconv"
)

// The guest's /init ends with this line, written to /dev/kmsg (so it
// survives a console line cut by poweroff -f, and shows with a timestamp
// prefix) and to the console. The trailing END makes a cut line detectable:
// "rc=1" cut from "rc=12" must not count.
const markerPrefix = "PKTFATE-VM-RESULT"

var markerRE = regexp.MustCompile(markerPrefix + ` rc=(\d{1,3}) END`)

// markerLine is the marker as the guest prints it.
func markerLine(rc int) string { return fmt.Sprintf("%s rc=%d END", markerPrefix, rc) }

// ParseMarker finds a complete result marker anywhere in a console line
// (kernel log prefixes and carriage returns allowed) and returns the
// guest's exit status.
func ParseMarker(line string) (rc int, ok bool) {
	m := markerRE.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	rc, err := strconv.Atoi(m[1])
	if err != nil || rc > 255 {
		return 0, false
	}
	return rc, true
}

// MarkerScanner remembers the first result marker fed to it, line by line.
type MarkerScanner struct {
	rc    int
	found bool
}

// Feed inspects one console line.
func (m *MarkerScanner) Feed(line string) {
	if m.found {
		return
	}
	m.rc, m.found = ParseMarker(line)
}

// Result returns the guest's status and whether a marker was seen.
func (m *MarkerScanner) Result() (rc int, found bool) { return m.rc, m.found }
