package fate

import (
	"slices"
	"strconv"
	"strings"
)

// The hook names of each netfilter protocol family (NFPROTO_*), by hook
// number: enum nf_inet_hooks for ipv4, ipv6 and inet, NF_ARP_* for arp,
// enum nf_dev_hooks for netdev, NF_BR_* for bridge. The one table of them.
var hookNames = map[uint8][]string{
	1:  {"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "INGRESS"},  // inet
	2:  {"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "INGRESS"},  // ipv4
	10: {"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "INGRESS"},  // ipv6
	3:  {"IN", "OUT", "FORWARD"},                                                        // arp
	5:  {"INGRESS", "EGRESS"},                                                           // netdev
	7:  {"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "BROUTING"}, // bridge
}

// NetfilterHook names hook number h of netfilter protocol family pf.
func NetfilterHook(pf, h uint8) string {
	if names := hookNames[pf]; int(h) < len(names) {
		return names[h]
	}
	return "HOOK_" + strconv.Itoa(int(h))
}

// NetfilterHookNames lists every hook name of every family, sorted: what
// a hook in a record, a scenario or a filter may be.
func NetfilterHookNames() []string {
	var out []string
	for _, names := range hookNames {
		for _, n := range names {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// NetfilterFamily names a netfilter protocol family (NFPROTO_*).
func NetfilterFamily(pf uint8) string {
	switch pf {
	case 1:
		return "inet"
	case 2:
		return "ipv4"
	case 3:
		return "arp"
	case 5:
		return "netdev"
	case 7:
		return "bridge"
	case 10:
		return "ipv6"
	}
	return "pf" + strconv.Itoa(int(pf))
}

// Function returns the function part of a location formatted by Format.
func Function(location string) string {
	fn, _, _ := strings.Cut(location, "+")
	return fn
}
