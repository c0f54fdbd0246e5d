package scenario

//go:generate go run ./reasonsgen -o reasons_gen.go

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Kernel is what the checks made before running need of the kernel the
// scenarios will run on.
type Kernel struct {
	// Release is its uname -r.
	Release string
	// Reasons are its drop reason names (from its BTF).
	Reasons []string
}

// checkReasons rejects drop reasons no supported kernel has (and, with
// k, that the running kernel lacks too); with k, also expectations that
// apply to the running kernel and name only reasons it does not have.
func (s *Scenario) checkReasons(k *Kernel) error {
	var errs []error
	for i, x := range s.Expect {
		p := fmt.Sprintf("expect.%d.reason", i)
		unknown := false
		for _, r := range x.Reasons {
			if _, ok := kernelReasons[r]; ok || k != nil && slices.Contains(k.Reasons, r) {
				continue
			}
			msg := fmt.Sprintf("%s: no supported kernel (%s) has this drop reason", r, strings.Join(kernelLines, ", "))
			if k != nil {
				msg = fmt.Sprintf("%s: neither this kernel (%s) nor a supported one (%s) has this drop reason", r, k.Release, strings.Join(kernelLines, ", "))
			}
			if near := nearest(r, k); len(near) > 0 {
				msg += "; did you mean " + strings.Join(near, " or ") + "?"
			}
			errs = append(errs, locate(s.File, s.root, p, msg))
			unknown = true
		}
		if k == nil || unknown || len(x.Reasons) == 0 || !x.Kernel.Contains(k.Release) {
			continue
		}
		if slices.ContainsFunc(x.Reasons, func(r string) bool { return slices.Contains(k.Reasons, r) }) {
			continue
		}
		var where []string
		for _, r := range x.Reasons {
			if lines := kernelReasons[r]; len(lines) > 0 {
				where = append(where, r+" is in "+strings.Join(lines, ", "))
			}
		}
		msg := fmt.Sprintf("this kernel (%s) has none of these drop reasons", k.Release)
		if len(where) > 0 {
			msg += " (" + strings.Join(where, "; ") + ")"
		}
		msg += ": list the reason this kernel gives too, or limit the expectation with kernel:"
		errs = append(errs, locate(s.File, s.root, p, msg))
	}
	return errors.Join(errs...)
}

// nearest returns the known reason names closest to a misspelt one (at
// most two edits away), closest first.
func nearest(name string, k *Kernel) []string {
	cands := map[string]bool{}
	for r := range kernelReasons {
		cands[r] = true
	}
	if k != nil {
		for _, r := range k.Reasons {
			cands[r] = true
		}
	}
	best, out := 3, []string(nil)
	for _, c := range slices.Sorted(func(yield func(string) bool) {
		for c := range cands {
			if !yield(c) {
				return
			}
		}
	}) {
		d := editDistance(name, c)
		switch {
		case d < best:
			best, out = d, []string{c}
		case d == best && len(out) < 3:
			out = append(out, c)
		}
	}
	return out
}

// editDistance is the Levenshtein distance between two names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
