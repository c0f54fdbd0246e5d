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

// The guest also reports /proc/sys/kernel/tainted, so that a kernel error
// whose report the console did not show still fails the line.
var markerRE = regexp.MustCompile(markerPrefix + ` rc=(\d{1,3})(?: taint=(\d{1,20}))? END`)

// markerLine is the marker as the guest prints it.
func markerLine(rc int, taint string) string {
	return fmt.Sprintf("%s rc=%d taint=%s END", markerPrefix, rc, taint)
}

// ParseMarker finds a complete result marker anywhere in a console line
// (kernel log prefixes and carriage returns allowed) and returns the
// guest's exit status.
func ParseMarker(line string) (rc int, ok bool) {
	rc, _, ok = parseMarker(line)
	return rc, ok
}

// parseMarker is ParseMarker that also returns the taint value ("" when
// the marker has none).
func parseMarker(line string) (rc int, taint string, ok bool) {
	m := markerRE.FindStringSubmatch(line)
	if m == nil {
		return 0, "", false
	}
	rc, err := strconv.Atoi(m[1])
	if err != nil || rc > 255 {
		return 0, "", false
	}
	return rc, m[2], true
}

// MarkerScanner remembers the first result marker fed to it, line by line.
type MarkerScanner struct {
	rc    int
	taint string
	found bool
}

// Feed inspects one console line.
func (m *MarkerScanner) Feed(line string) {
	if m.found {
		return
	}
	m.rc, m.taint, m.found = parseMarker(line)
}

// Taint is /proc/sys/kernel/tainted as the guest reported it with its
// marker, or "".
func (m *MarkerScanner) Taint() string { return m.taint }

// Result returns the guest's status and whether a marker was seen.
func (m *MarkerScanner) Result() (rc int, found bool) { return m.rc, m.found }
