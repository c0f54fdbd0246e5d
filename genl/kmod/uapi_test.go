package kmod

import (
	"bufio"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/internal/testutil"
)

// uapiHeader is the single source of the protocol.
const uapiHeader = "../../kmod/include/uapi/linux/pktfate.h"

// parseUAPI returns the header's #define values (numbers and strings,
// simple shifts and ORs of earlier ones) and its enum members' values.
func parseUAPI(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(uapiHeader)
	if err != nil {
		if testutil.InVM() != "" && errors.Is(err, os.ErrNotExist) {
			// The harness ships testdata/ folders, not kmod/: the header
			// is compared on the host (and in CI), where it is.
			t.Skipf("%s is not shipped into the kernel matrix", uapiHeader)
		}
		t.Fatal(err)
	}
	defer f.Close()
	vals := map[string]string{}
	define := regexp.MustCompile(`^#define\s+(PKTFATE_\w+)\s+(.+?)\s*(/\*.*)?$`)
	member := regexp.MustCompile(`^\s*(_*PKTFATE_\w+)\s*(=\s*(\w+))?\s*,`)
	shift := regexp.MustCompile(`^\(1U << (\d+)\)$`)
	inEnum, next := false, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "enum "):
			inEnum, next = true, 0
		case inEnum && strings.HasPrefix(line, "}"):
			inEnum = false
		case inEnum:
			m := member.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if m[3] != "" {
				n, err := strconv.Atoi(m[3])
				if err != nil {
					t.Fatalf("enum value %q", line)
				}
				next = n
			}
			vals[m[1]] = strconv.Itoa(next)
			next++
		default:
			m := define.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			v := m[2]
			if s := shift.FindStringSubmatch(v); s != nil {
				n, _ := strconv.Atoi(s[1])
				v = strconv.Itoa(1 << n)
			} else if strings.HasPrefix(v, "(") && strings.Contains(v, "|") {
				or := 0
				for _, p := range strings.Split(strings.Trim(v, "()"), "|") {
					n, err := strconv.Atoi(vals[strings.TrimSpace(p)])
					if err != nil {
						t.Fatalf("define %q", line)
					}
					or |= n
				}
				v = strconv.Itoa(or)
			} else if strings.HasPrefix(v, "(__") {
				// PKTFATE_X_MAX (__PKTFATE_X_MAX - 1)
				inner := strings.TrimSuffix(strings.TrimPrefix(v, "("), " - 1)")
				n, err := strconv.Atoi(vals[inner])
				if err != nil {
					t.Fatalf("define %q", line)
				}
				v = strconv.Itoa(n - 1)
			}
			vals[m[1]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vals
}

// TestUAPIHeader fails when uapi.go and the module's header disagree, in
// either direction: every PKTFATE_ name of the header needs its Go value.
func TestUAPIHeader(t *testing.T) {
	h := parseUAPI(t)
	q := strconv.Quote
	n := func(v int) string { return strconv.Itoa(v) }
	want := map[string]string{
		"PKTFATE_GENL_NAME":         q(familyName),
		"PKTFATE_GENL_VERSION":      n(familyVersion),
		"PKTFATE_GENL_MCGRP_EVENTS": q(eventsGroup),
		"PKTFATE_PAYLOAD_MAX":       n(PayloadMax),
		"PKTFATE_SESSIONS_MAX":      n(SessionsMax),
		"PKTFATE_FAMILY_IPV4":       n(int(FamilyIPv4)),
		"PKTFATE_FAMILY_IPV6":       n(int(FamilyIPv6)),
		"PKTFATE_FAMILY_ALL":        n(int(FamilyInet)),
		"PKTFATE_FAMILY_ARP":        n(int(FamilyARP)),
		"PKTFATE_FAMILY_BRIDGE":     n(int(FamilyBridge)),
		"PKTFATE_FAMILY_NETDEV":     n(int(FamilyNetdev)),
		"PKTFATE_FAMILY_MASK":       n(int(FamilyMask)),

		"PKTFATE_WHERE_CHAIN": n(int(WhereChain)), "PKTFATE_WHERE_TAIL": n(int(WhereTail)), "PKTFATE_WHERE_QUEUE": n(int(WhereQueue)),

		"PKTFATE_MEM_UNSPEC": "0", "PKTFATE_MEM_TABLE": n(int(MemTable)), "PKTFATE_MEM_PERCPU": n(int(MemPercpu)),
		"PKTFATE_MEM_RING": n(int(MemRing)), "PKTFATE_MEM_SESSION": n(int(MemSession)), "PKTFATE_MEM_FILTER": n(int(MemFilter)),
		"PKTFATE_MEM_HOOKS": n(int(MemHooks)), "PKTFATE_MEM_MESSAGE": n(int(MemMessage)),
		"__PKTFATE_MEM_MAX": n(memKinds), "PKTFATE_MEM_MAX": n(memKinds - 1),

		"PKTFATE_CMD_UNSPEC": n(cmdUnspec), "PKTFATE_CMD_ENABLE": n(cmdEnable), "PKTFATE_CMD_DISABLE": n(cmdDisable),
		"PKTFATE_CMD_SET_FILTER": n(cmdSetFilter), "PKTFATE_CMD_GET_STATS": n(cmdGetStats), "PKTFATE_CMD_DROP": n(cmdDrop),
		"PKTFATE_CMD_SESSION_NEW": n(cmdSessionNew),
		"__PKTFATE_CMD_MAX":       n(cmdSessionNew + 1), "PKTFATE_CMD_MAX": n(cmdSessionNew),

		"PKTFATE_ATTR_UNSPEC": n(attrUnspec), "PKTFATE_ATTR_PAD": n(attrPad), "PKTFATE_ATTR_HOOK": n(attrHook),
		"PKTFATE_ATTR_FAMILY": n(attrFamily), "PKTFATE_ATTR_NETNS": n(attrNetns), "PKTFATE_ATTR_IN_IFINDEX": n(attrInIfindex),
		"PKTFATE_ATTR_OUT_IFINDEX": n(attrOutIfindex), "PKTFATE_ATTR_SKB": n(attrSkb), "PKTFATE_ATTR_MARK": n(attrMark),
		"PKTFATE_ATTR_TIMESTAMP": n(attrTimestamp), "PKTFATE_ATTR_REASON": n(attrReason), "PKTFATE_ATTR_LOCATION": n(attrLocation),
		"PKTFATE_ATTR_LEN": n(attrLen), "PKTFATE_ATTR_PROTOCOL": n(attrProtocol), "PKTFATE_ATTR_CPU": n(attrCPU),
		"PKTFATE_ATTR_PAYLOAD": n(attrPayload), "PKTFATE_ATTR_ENABLED": n(attrEnabled), "PKTFATE_ATTR_RATE": n(attrRate),
		"PKTFATE_ATTR_BURST": n(attrBurst), "PKTFATE_ATTR_QUEUE_LEN": n(attrQueueLen),
		"PKTFATE_ATTR_FILTER_NETNS": n(attrFilterNetns), "PKTFATE_ATTR_FILTER_MARK": n(attrFilterMark),
		"PKTFATE_ATTR_FILTER_MARK_MASK": n(attrFilterMarkMask), "PKTFATE_ATTR_FILTER_FAMILIES": n(attrFilterFamilies),
		"PKTFATE_ATTR_STAT_SEEN": n(attrStatSeen), "PKTFATE_ATTR_STAT_REPORTED": n(attrStatReported),
		"PKTFATE_ATTR_STAT_RATE_LIMITED": n(attrStatRateLimited), "PKTFATE_ATTR_STAT_QUEUE_FULL": n(attrStatQueueFull),
		"PKTFATE_ATTR_STAT_ALLOC_FAILED": n(attrStatAllocFailed), "PKTFATE_ATTR_STAT_SEND_FAILED": n(attrStatSendFailed),
		"PKTFATE_ATTR_STAT_TABLE_FULL": n(attrStatTableFull),
		"PKTFATE_ATTR_SESSION":         n(attrSession), "PKTFATE_ATTR_SESSIONS": n(attrSessions),
		"PKTFATE_ATTR_SESSIONS_MAX": n(attrSessionsMax), "PKTFATE_ATTR_WHERE": n(attrWhere),
		"PKTFATE_ATTR_TABLE_SIZE": n(attrTableSize), "PKTFATE_ATTR_TABLE_USED": n(attrTableUsed),
		"PKTFATE_ATTR_STALE_MS": n(attrStaleMs), "PKTFATE_ATTR_FAMILIES_COVERED": n(attrFamiliesCovered),
		"PKTFATE_ATTR_NETDEV_HOOKS_COVERED": n(attrNetdevHooksCovered), "PKTFATE_ATTR_TAIL_CHAINS": n(attrTailChains),
		"PKTFATE_ATTR_HOOK_FAILURES": n(attrHookFailures), "PKTFATE_ATTR_MODULE_STATS": n(attrModuleStats),
		"PKTFATE_ATTR_STAT_STOLEN": n(attrStatStolen), "PKTFATE_ATTR_STAT_STALE_EXPIRED": n(attrStatStaleExpired),
		"PKTFATE_ATTR_STAT_STALE_DROPPED": n(attrStatStaleDropped), "PKTFATE_ATTR_STAT_TRACKED": n(attrStatTracked),
		"PKTFATE_ATTR_STAT_REBRACKETED": n(attrStatRebracketed), "PKTFATE_ATTR_MEMORY": n(attrMemory),
		"PKTFATE_ATTR_MEM_ALLOC_BYTES": n(attrMemAllocBytes), "PKTFATE_ATTR_MEM_FREED_BYTES": n(attrMemFreedBytes),
		"PKTFATE_ATTR_MEM_ALLOC_OBJECTS": n(attrMemAllocObjects), "PKTFATE_ATTR_MEM_FREED_OBJECTS": n(attrMemFreedObjects),
		"__PKTFATE_ATTR_MAX": n(attrMax + 1), "PKTFATE_ATTR_MAX": n(attrMax),
	}
	for name, v := range want {
		if got, ok := h[name]; !ok {
			t.Errorf("%s: not in %s", name, uapiHeader)
		} else if got != v {
			t.Errorf("%s: header %s, Go %s", name, got, v)
		}
	}
	for name, v := range h {
		if _, ok := want[name]; !ok {
			t.Errorf("%s = %s in the header has no Go counterpart: add it to uapi.go and this test", name, v)
		}
	}
	if len(h) < 80 {
		t.Errorf("parsed only %d names from the header: parser broken?", len(h))
	}
}
