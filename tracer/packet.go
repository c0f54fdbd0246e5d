package tracer

import "github.com/pktfate/pktfate/fate"

// decodePacket fills p with the summary of the captured headers
// (fate.DecodePacket, which pktfate report shares).
func decodePacket(p *fate.Packet, etherType uint16, data []byte, mac bool) {
	fate.DecodePacket(p, etherType, data, mac)
}
