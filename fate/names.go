package fate

import (
	"strconv"
	"strings"
)

// NetfilterHook names a netfilter inet hook number (enum nf_inet_hooks).
func NetfilterHook(h uint8) string {
	switch h {
	case 0:
		return "PRE_ROUTING"
	case 1:
		return "LOCAL_IN"
	case 2:
		return "FORWARD"
	case 3:
		return "LOCAL_OUT"
	case 4:
		return "POST_ROUTING"
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
