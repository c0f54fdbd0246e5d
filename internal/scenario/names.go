package scenario

import (
	"slices"
	"strings"

	"github.com/pktfate/pktfate/fate"
)

// Netfilter protocol families (NFPROTO_*) that have hooks, and the hook
// names of each, from the model's one definition (fate.NetfilterHook).
var nfFamilies = []uint8{1, 2, 3, 5, 7, 10}

// familyNames lists the netfilter family names an expectation may give.
func familyNames() []string {
	var out []string
	for _, pf := range nfFamilies {
		out = append(out, fate.NetfilterFamily(pf))
	}
	return out
}

// hookNames lists the hook names of a family ("" : of every family).
func hookNames(family string) []string {
	var out []string
	for _, pf := range nfFamilies {
		if family != "" && fate.NetfilterFamily(pf) != family {
			continue
		}
		for h := uint8(0); ; h++ {
			name := fate.NetfilterHook(pf, h)
			if strings.HasPrefix(name, "HOOK_") {
				break
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}
