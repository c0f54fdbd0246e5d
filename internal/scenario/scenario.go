package scenario

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Scenario is one scenario file, validated.
type Scenario struct {
	// File is the path the scenario was read from.
	File        string
	Name        string
	Description string
	// Trace names the namespace whose packets are traced (and where the
	// netfilter attribution attaches).
	Trace string
	// Timeout bounds the wait for the expected fates (default 5s).
	Timeout    time.Duration
	Namespaces []Namespace
	Veths      []Veth
	Rules      []Rule
	Listen     []Listener
	Traffic    []Traffic
	Expect     []Expectation
}

// Namespace is a network namespace of the topology.
type Namespace struct {
	Name string
	// Sysctls are applied in order, after the veth pairs exist.
	Sysctls []Sysctl
	Routes  []Route
}

// Sysctl is one key=value under /proc/sys ("net.ipv4.ip_forward", "1").
type Sysctl struct{ Key, Value string }

// Route is a route in a namespace: To is a prefix or "default".
type Route struct {
	To  string
	Via netip.Addr // invalid for an on-link route
	Dev string
}

// Veth is a veth pair.
type Veth struct{ A, B VethEnd }

// VethEnd is one end of a veth pair.
type VethEnd struct {
	Netns string
	Name  string
	Addrs []netip.Prefix
}

// Rule tools.
const (
	ToolNftables       = "nftables"
	ToolIptablesLegacy = "iptables-legacy"
	ToolIptablesNft    = "iptables-nft"
	ToolIp6Legacy      = "ip6tables-legacy"
	ToolIp6Nft         = "ip6tables-nft"
	ToolTC             = "tc"
	ToolIP             = "ip"
)

var tools = []string{ToolNftables, ToolIptablesLegacy, ToolIptablesNft, ToolIp6Legacy, ToolIp6Nft, ToolTC, ToolIP}

// Rule installs netfilter rules (or runs tc/ip commands) in a namespace.
type Rule struct {
	Netns string
	Tool  string
	// Ruleset is the nftables ruleset text, loaded with nft -f -.
	Ruleset string
	// Commands are the arguments of one command each, for the other
	// tools (iptables ones run with -w).
	Commands [][]string
}

// Binary returns the program a rule's tool runs.
func (r Rule) Binary() string {
	if r.Tool == ToolNftables {
		return "nft"
	}
	return r.Tool
}

// Listener is a socket opened before the traffic is sent.
type Listener struct {
	Netns string
	Proto string // udp or tcp
	Addr  netip.AddrPort
	// RcvBuf sets SO_RCVBUF (0 keeps the default).
	RcvBuf int
	// Read makes the socket read (UDP) or accept (TCP) what it gets.
	Read bool
}

// Traffic is packets sent from a namespace.
type Traffic struct {
	From  string
	Proto string // udp, tcp or icmp (echo request; ICMPv6 for IPv6)
	To    netip.AddrPort
	// Src binds the sending socket to this address (invalid: any).
	Src   netip.Addr
	Count int
	// TTL sets the IP TTL / hop limit (0 keeps the default).
	TTL int
	// Size is the payload length in bytes.
	Size int
	// BadChecksum sends UDP datagrams with a wrong checksum (through a
	// raw socket).
	BadChecksum bool
}

// Expectation is a fate some packets must meet.
type Expectation struct {
	// Name labels the expectation in reports and baselines.
	Name  string
	Match Match
	Fate  string // drop or consume
	// Reasons are the acceptable drop reasons (any of; empty: any).
	Reasons []string
	// Hook is the netfilter hook ("LOCAL_IN"), "none" when the packet
	// must not be freed inside netfilter, "" when not checked.
	Hook string
	// Functions are the acceptable kernel functions that freed the packet
	// (any of; empty: any). Kernels inline and rename them.
	Functions []string
	// Count, when set, is the exact number of packets; otherwise at least
	// MinCount (default 1).
	Count    *int
	MinCount int
	// ConfirmedBy names the observers that must have seen each packet.
	ConfirmedBy []string
	// Kernel limits the expectation to some kernels (nil: every one).
	Kernel *KernelRange
}

// KernelRange is a comparison with a kernel version: ">=6.3", "<6.3".
type KernelRange struct {
	Op           string // <, <=, >, >=, ==
	Major, Minor int
}

func (k *KernelRange) String() string { return fmt.Sprintf("%s%d.%d", k.Op, k.Major, k.Minor) }

// Contains tells whether a kernel release ("6.12.95+deb12-amd64") is in
// the range; a release that cannot be read is in every range.
func (k *KernelRange) Contains(release string) bool {
	if k == nil {
		return true
	}
	major, minor, ok := kernelVersion(release)
	if !ok {
		return true
	}
	c := major*1000 + minor - (k.Major*1000 + k.Minor)
	switch k.Op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return c == 0
}

// kernelVersion reads major.minor from a release string.
func kernelVersion(release string) (major, minor int, ok bool) {
	a, rest, _ := strings.Cut(release, ".")
	b := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		b = rest[:i]
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(a)
	minor, err2 = strconv.Atoi(b)
	return major, minor, err1 == nil && err2 == nil
}

// Match selects packets by their headers; zero fields match anything.
type Match struct {
	Proto    string
	Src, Dst netip.Addr
	Sport    uint16
	Dport    uint16
	ICMPType *uint8
}

// String describes the match as a pcap-filter-like phrase.
func (m Match) String() string {
	var parts []string
	if m.Proto != "" {
		parts = append(parts, m.Proto)
	}
	if m.Src.IsValid() {
		parts = append(parts, "src "+m.Src.String())
	}
	if m.Dst.IsValid() {
		parts = append(parts, "dst "+m.Dst.String())
	}
	if m.Sport != 0 {
		parts = append(parts, fmt.Sprintf("sport %d", m.Sport))
	}
	if m.Dport != 0 {
		parts = append(parts, fmt.Sprintf("dport %d", m.Dport))
	}
	if m.ICMPType != nil {
		parts = append(parts, fmt.Sprintf("icmp-type %d", *m.ICMPType))
	}
	if len(parts) == 0 {
		return "any packet"
	}
	return strings.Join(parts, " ")
}

// Want describes what the expectation asks for ("3 × drop NO_SOCKET in
// __udp4_lib_rcv").
func (x Expectation) Want() string {
	var b strings.Builder
	if x.Count != nil {
		fmt.Fprintf(&b, "exactly %d × ", *x.Count)
	} else if x.MinCount > 1 {
		fmt.Fprintf(&b, "at least %d × ", x.MinCount)
	}
	b.WriteString(x.Fate)
	if len(x.Reasons) > 0 {
		b.WriteString(" " + strings.Join(x.Reasons, "|"))
	}
	if len(x.Functions) > 0 {
		b.WriteString(" in " + strings.Join(x.Functions, "|"))
	}
	switch x.Hook {
	case "":
	case "none":
		b.WriteString(" outside netfilter")
	default:
		b.WriteString(" at hook " + x.Hook)
	}
	if len(x.ConfirmedBy) > 0 {
		b.WriteString(" confirmed by " + strings.Join(x.ConfirmedBy, "+"))
	}
	return b.String()
}
