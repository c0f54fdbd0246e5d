package kmod

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// udpDst returns the destination of a UDP packet from its network header.
func udpDst(p []byte) (netip.AddrPort, bool) {
	switch {
	case len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP:
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+4 {
			return netip.AddrPort{}, false
		}
		a, _ := netip.AddrFromSlice(p[16:20])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[ihl+2:])), true
	case len(p) >= 48 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_UDP:
		a, _ := netip.AddrFromSlice(p[24:40])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[42:])), true
	}
	return netip.AddrPort{}, false
}
