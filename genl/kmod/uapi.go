package kmod

import "strconv"

// The pktfate generic netlink protocol, mirrored from
// kmod/include/uapi/linux/pktfate.h (TestUAPIHeader compares every value).

const (
	familyName    = "pktfate" // PKTFATE_GENL_NAME
	familyVersion = 1         // PKTFATE_GENL_VERSION
	eventsGroup   = "events"  // PKTFATE_GENL_MCGRP_EVENTS

	// PayloadMax is the most bytes of a packet an event carries, from its
	// network header (PKTFATE_PAYLOAD_MAX).
	PayloadMax = 128
)

// Commands: enum pktfate_cmd.
const (
	cmdUnspec    = 0
	cmdEnable    = 1
	cmdDisable   = 2
	cmdSetFilter = 3
	cmdGetStats  = 4
	cmdDrop      = 5
)

// Attributes: enum pktfate_attr.
const (
	attrUnspec          = 0
	attrPad             = 1
	attrHook            = 2  // u8, NF_INET_*
	attrFamily          = 3  // u8, NFPROTO_IPV4 or NFPROTO_IPV6
	attrNetns           = 4  // u32
	attrInIfindex       = 5  // u32
	attrOutIfindex      = 6  // u32
	attrSkb             = 7  // u64
	attrMark            = 8  // u32
	attrTimestamp       = 9  // u64, CLOCK_MONOTONIC ns
	attrReason          = 10 // u32, enum skb_drop_reason
	attrLocation        = 11 // u64
	attrLen             = 12 // u32
	attrProtocol        = 13 // u16, host byte order
	attrCPU             = 14 // u32
	attrPayload         = 15 // binary, from the network header
	attrEnabled         = 16 // u8
	attrRate            = 17 // u32
	attrBurst           = 18 // u32
	attrQueueLen        = 19 // u32
	attrFilterNetns     = 20 // u32
	attrFilterMark      = 21 // u32
	attrFilterMarkMask  = 22 // u32
	attrFilterFamilies  = 23 // u32, Families
	attrStatSeen        = 24 // u64
	attrStatReported    = 25 // u64
	attrStatRateLimited = 26 // u64
	attrStatQueueFull   = 27 // u64
	attrStatAllocFailed = 28 // u64
	attrStatSendFailed  = 29 // u64
	attrStatTableFull   = 30 // u64
	attrMax             = attrStatTableFull
)

// Families selects address families in a Filter (PKTFATE_FAMILY_*); 0 is
// all of them.
type Families uint32

const (
	FamilyIPv4 Families = 1 << 0 // PKTFATE_FAMILY_IPV4
	FamilyIPv6 Families = 1 << 1 // PKTFATE_FAMILY_IPV6
)

// Netfilter protocol families of Drop.Family (NFPROTO_*, linux/netfilter.h).
const (
	NFProtoIPv4 = 2
	NFProtoIPv6 = 10
)

var hookNames = [...]string{"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING"}

// HookName returns the name of an NF_INET_* hook ("LOCAL_IN"), as the ebpf
// source names them.
func HookName(hook uint8) string {
	if int(hook) < len(hookNames) {
		return hookNames[hook]
	}
	return "hook(" + strconv.Itoa(int(hook)) + ")"
}

// FamilyName returns "ipv4" or "ipv6" for an NFPROTO_* value.
func FamilyName(pf uint8) string {
	switch pf {
	case NFProtoIPv4:
		return "ipv4"
	case NFProtoIPv6:
		return "ipv6"
	}
	return "nfproto(" + strconv.Itoa(int(pf)) + ")"
}
