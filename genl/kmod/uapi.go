package kmod

import (
	"strconv"

	"github.com/pktfate/pktfate/fate"
)

// The pktfate generic netlink protocol, mirrored from
// kmod/include/uapi/linux/pktfate.h (TestUAPIHeader compares every value).

const (
	familyName    = "pktfate" // PKTFATE_GENL_NAME
	familyVersion = 2         // PKTFATE_GENL_VERSION
	eventsGroup   = "events"  // PKTFATE_GENL_MCGRP_EVENTS (carries nothing since version 2)

	// PayloadMax is the most bytes of a packet an event carries, from its
	// network header (PKTFATE_PAYLOAD_MAX).
	PayloadMax = 128

	// SessionsMax is how many sessions the module keeps at once
	// (PKTFATE_SESSIONS_MAX).
	SessionsMax = 8
)

// Commands: enum pktfate_cmd.
const (
	cmdUnspec     = 0
	cmdEnable     = 1
	cmdDisable    = 2
	cmdSetFilter  = 3
	cmdGetStats   = 4
	cmdDrop       = 5
	cmdSessionNew = 6
)

// Attributes: enum pktfate_attr.
const (
	attrUnspec             = 0
	attrPad                = 1
	attrHook               = 2  // u8, the family's hook number
	attrFamily             = 3  // u8, NFPROTO_*
	attrNetns              = 4  // u32
	attrInIfindex          = 5  // u32
	attrOutIfindex         = 6  // u32
	attrSkb                = 7  // u64
	attrMark               = 8  // u32
	attrTimestamp          = 9  // u64, CLOCK_MONOTONIC ns
	attrReason             = 10 // u32, enum skb_drop_reason
	attrLocation           = 11 // u64
	attrLen                = 12 // u32
	attrProtocol           = 13 // u16, host byte order
	attrCPU                = 14 // u32
	attrPayload            = 15 // binary, from the network header
	attrEnabled            = 16 // u8
	attrRate               = 17 // u32
	attrBurst              = 18 // u32
	attrQueueLen           = 19 // u32
	attrFilterNetns        = 20 // u32
	attrFilterMark         = 21 // u32
	attrFilterMarkMask     = 22 // u32
	attrFilterFamilies     = 23 // u32, Families
	attrStatSeen           = 24 // u64
	attrStatReported       = 25 // u64
	attrStatRateLimited    = 26 // u64
	attrStatQueueFull      = 27 // u64
	attrStatAllocFailed    = 28 // u64
	attrStatSendFailed     = 29 // u64
	attrStatTableFull      = 30 // u64
	attrSession            = 31 // u32
	attrSessions           = 32 // u32
	attrSessionsMax        = 33 // u32
	attrWhere              = 34 // u8, Where
	attrTableSize          = 35 // u32
	attrTableUsed          = 36 // u32
	attrStaleMs            = 37 // u32
	attrFamiliesCovered    = 38 // u32, Families
	attrNetdevHooksCovered = 39 // u32, 1 << NF_NETDEV_*
	attrTailChains         = 40 // u32
	attrHookFailures       = 41 // u32
	attrModuleStats        = 42 // nest
	attrStatStolen         = 43 // u64
	attrStatStaleExpired   = 44 // u64
	attrStatStaleDropped   = 45 // u64
	attrStatTracked        = 46 // u64
	attrStatRebracketed    = 47 // u64
	attrMemory             = 48 // nest of MemKind nests
	attrMemAllocBytes      = 49 // u64
	attrMemFreedBytes      = 50 // u64
	attrMemAllocObjects    = 51 // u64
	attrMemFreedObjects    = 52 // u64
	attrMax                = attrMemFreedObjects
)

// Families selects netfilter families in a Filter (PKTFATE_FAMILY_*); 0 is
// all of them. ModuleStats.Families says which this module build hooks.
type Families uint32

const (
	FamilyIPv4   Families = 1 << 0 // PKTFATE_FAMILY_IPV4
	FamilyIPv6   Families = 1 << 1 // PKTFATE_FAMILY_IPV6
	FamilyARP    Families = 1 << 2 // PKTFATE_FAMILY_ARP
	FamilyBridge Families = 1 << 3 // PKTFATE_FAMILY_BRIDGE
	FamilyNetdev Families = 1 << 4 // PKTFATE_FAMILY_NETDEV (ingress, inet ingress, egress)

	// FamilyInet is IPv4 and IPv6 (PKTFATE_FAMILY_ALL, all there were in
	// version 1).
	FamilyInet = FamilyIPv4 | FamilyIPv6
	// FamilyMask is every family bit (PKTFATE_FAMILY_MASK).
	FamilyMask = FamilyInet | FamilyARP | FamilyBridge | FamilyNetdev
)

// Netfilter protocol families of Drop.Family (NFPROTO_*, linux/netfilter.h).
const (
	NFProtoInet   = 1
	NFProtoIPv4   = 2
	NFProtoARP    = 3
	NFProtoNetdev = 5
	NFProtoBridge = 7
	NFProtoIPv6   = 10
)

// Netdev hooks (enum nf_dev_hooks), bits of ModuleStats.NetdevHooks as
// 1 << hook.
const (
	NetdevIngress = 0
	NetdevEgress  = 1
)

// Where says where in its hook's chain a packet was freed
// (PKTFATE_WHERE_*).
type Where uint8

const (
	// WhereChain: between the module's first entry (priority INT_MIN) and
	// its last (INT_MAX).
	WhereChain Where = 0
	// WhereTail: right after the module's last entry, by an INT_MAX hook
	// registered before the module (freed with reason NETFILTER_DROP).
	WhereTail Where = 1
	// WhereQueue: by the verdict of the queue (NF_QUEUE) a hook of the
	// chain handed it to.
	WhereQueue Where = 2
)

func (w Where) String() string {
	switch w {
	case WhereChain:
		return "chain"
	case WhereTail:
		return "tail"
	case WhereQueue:
		return "queue"
	}
	return "where(" + strconv.Itoa(int(w)) + ")"
}

// MemKind is a kind of the module's own allocations (PKTFATE_MEM_*), an
// index of ModuleStats.Memory.
type MemKind int

const (
	MemTable   MemKind = 1 // PKTFATE_MEM_TABLE: the in-flight table
	MemPercpu  MemKind = 2 // PKTFATE_MEM_PERCPU: per-CPU data, module and sessions
	MemRing    MemKind = 3 // PKTFATE_MEM_RING: the sessions' per-CPU queues
	MemSession MemKind = 4 // PKTFATE_MEM_SESSION: session structs
	MemFilter  MemKind = 5 // PKTFATE_MEM_FILTER: filters
	MemHooks   MemKind = 6 // PKTFATE_MEM_HOOKS: hook entries of devices
	MemMessage MemKind = 7 // PKTFATE_MEM_MESSAGE: DROP messages until handed to netlink
	memKinds           = 8 // __PKTFATE_MEM_MAX
)

var memNames = [memKinds]string{"", "table", "percpu", "ring", "session", "filter", "hooks", "message"}

func (k MemKind) String() string {
	if k > 0 && int(k) < len(memNames) {
		return memNames[k]
	}
	return "mem(" + strconv.Itoa(int(k)) + ")"
}

// HookName returns the name of hook in family's numbering (an NFPROTO_*
// value): "LOCAL_IN" for NFPROTO_IPV4 1, "OUT" for NFPROTO_ARP 1, "EGRESS"
// for NFPROTO_NETDEV 1: fate's one table of hook names, which every
// observer uses.
func HookName(family, hook uint8) string { return fate.NetfilterHook(family, hook) }

// FamilyName returns "ipv4", "ipv6", "arp", "bridge", "netdev" or "inet"
// for an NFPROTO_* value.
func FamilyName(pf uint8) string { return fate.NetfilterFamily(pf) }
