package fate

import (
	"strconv"
	"strings"
)

// NetfilterHook names hook number h of netfilter protocol family pf
// (NFPROTO_*): enum nf_inet_hooks for ipv4, ipv6 and inet, NF_BR_* for
// bridge, NF_ARP_* for arp, enum nf_dev_hooks for netdev.
func NetfilterHook(pf, h uint8) string {
	var names []string
	switch pf {
	case 1, 2, 10: // inet, ipv4, ipv6
		names = []string{"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "INGRESS"}
	case 3: // arp
		names = []string{"IN", "OUT", "FORWARD"}
	case 5: // netdev
		names = []string{"INGRESS", "EGRESS"}
	case 7: // bridge
		names = []string{"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "BROUTING"}
	}
	if int(h) < len(names) {
		return names[h]
	}
	return "HOOK_" + strconv.Itoa(int(h))
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
