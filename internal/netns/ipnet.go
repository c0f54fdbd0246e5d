package netns

import (
	"net"
	"net/netip"
)

func parseIPNet(p netip.Prefix) (net.IP, *net.IPNet, error) {
	return net.ParseCIDR(p.String())
}
