package vm

import (
	"fmt"
	"strings"
)

// Line is one kernel line of the matrix: a Debian suite whose
// linux-image-amd64 metapackage points at the newest kernel of that line.
type Line struct {
	// Name is what users type (-kernel 6.12) and what tests see in PKTFATE_VM.
	Name string
	// Suite is the Debian suite holding the line.
	Suite string
	// CC is the compiler the line's kernel was built with; out-of-tree
	// modules must use the same one.
	CC string
	// Chroot is true when CC does not exist on the host (bookworm) and
	// modules are built in a cached sid chroot instead.
	Chroot bool
}

// Lines lists the kernel lines of the matrix, oldest first.
func Lines() []Line {
	return []Line{
		{Name: "6.1", Suite: "bookworm", CC: "gcc-12"},
		{Name: "6.12", Suite: "bookworm-backports", CC: "gcc-12"},
		{Name: "7.2", Suite: "sid", CC: "gcc-16", Chroot: true},
	}
}

// ParseLines turns a comma-separated list of line names ("6.1,7.2") into
// lines; an empty list means all of them.
func ParseLines(s string) ([]Line, error) {
	all := Lines()
	if strings.TrimSpace(s) == "" {
		return all, nil
	}
	var out []Line
	seen := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		l, ok := lineByName(all, name)
		if !ok {
			return nil, fmt.Errorf("parsing kernel lines: unknown line %q (known: %s)", name, lineNames(all))
		}
		seen[name] = true
		out = append(out, l)
	}
	return out, nil
}

func lineByName(all []Line, name string) (Line, bool) {
	for _, l := range all {
		if l.Name == name {
			return l, true
		}
	}
	return Line{}, false
}

func lineNames(ls []Line) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Name
	}
	return strings.Join(names, ",")
}
