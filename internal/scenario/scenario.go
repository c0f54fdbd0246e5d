package scenario

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Scenario is one scenario file, validated.
type Scenario struct {
	// File is the path the scenario was read from.
	File        string
	Name        string
	Description string
	// Trace names the namespaces whose packets are traced (and where the
	// netfilter attribution attaches), at least one.
	Trace []string
	// Timeout bounds the wait for the expected fates (default 5s).
	Timeout time.Duration
	// Complete asks for a capture that lost nothing: every loss counter
	// zero and none unknown.
	Complete   bool
	Namespaces []Namespace
	Veths      []Veth
	// Devices are the other interfaces (bridges, tunnels...), created in
	// order after the veth pairs.
	Devices []Device
	Rules   []Rule
	Listen  []Listener
	// Traffic is sent in order: packets, and steps such as closing a
	// listener.
	Traffic []Traffic
	Expect  []Expectation

	// root is the file's YAML, to place mistakes found after parsing
	// (against the running kernel) on their line.
	root *yaml.Node
}

// TracesSeveral tells whether the scenario traces more than one
// namespace: then the fates are told apart by namespace too.
func (s *Scenario) TracesSeveral() bool { return len(s.Trace) > 1 }

// Namespace is a network namespace of the topology.
type Namespace struct {
	Name string
	// Sysctls are applied in order, after the veth pairs exist.
	Sysctls []Sysctl
	Routes  []Route
}

// Sysctl is one key=value under /proc/sys ("net.ipv4.ip_forward", "1").
type Sysctl struct {
	Key, Value string
	// Optional skips a key that does not exist ("-key=value", as in
	// sysctl.d): one a module that may be absent registers.
	Optional bool
}

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
	// MTU sets the interface's MTU (0 keeps the default).
	MTU int
}

// Device is an interface created with ip link add NAME type TYPE ARGS...
// (a bridge, a VXLAN or GRE tunnel, a dummy...), with ports (interfaces
// of its namespace it becomes the master of) and addresses, then set up.
type Device struct {
	Netns string
	Name  string
	Type  string
	Args  []string
	Ports []string
	Addrs []netip.Prefix
	MTU   int
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
	// Name lets a traffic step close the listener ("" when none does).
	Name  string
	Netns string
	Proto string // udp or tcp
	Addr  netip.AddrPort
	// RcvBuf sets SO_RCVBUF (0 keeps the default).
	RcvBuf int
	// Backlog is listen(2)'s backlog for TCP (-1: the system's maximum).
	Backlog int
	// Mode is what the socket does with what it gets (ModeRead...).
	Mode string
}

// Listener modes.
const (
	// ModeRead reads every datagram (UDP), or accepts every connection and
	// reads it to its end (TCP).
	ModeRead = "read"
	// ModeNone never reads (UDP) or accepts (TCP): queues fill.
	ModeNone = "none"
	// ModeHold accepts connections and neither reads nor closes them.
	ModeHold = "hold"
	// ModeClose accepts connections and closes them at once (FIN).
	ModeClose = "close"
	// ModeReset accepts connections, waits for their first data and
	// closes them unread with SO_LINGER 0: a reset (RST).
	ModeReset = "reset"
)

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
	// Fragments, when set, sends each UDP datagram or ICMP echo request
	// cut into these IP fragments, in this order, through a raw socket.
	Fragments []Fragment
	// TCPFlags, when set, sends raw TCP segments with these flags (no
	// connection) instead of connecting.
	TCPFlags uint8
	// Data says how a TCP connection sends its payload (DataNow...).
	Data string
	// Close, for a step that closes a listener, is its name; the other
	// fields are then empty.
	Close string
}

// Fragment is one IP fragment of a datagram: Length bytes of its IP
// payload (the UDP or ICMP header and data) from Offset. Its more-
// fragments flag is set unless it reaches the end of the datagram.
type Fragment struct{ Offset, Length int }

// TCP data modes.
const (
	// DataNow connects, sends the payload and closes.
	DataNow = "now"
	// DataAfterPeerClose connects, waits until the peer has closed its
	// side (a FIN), then sends the payload: data to a closed socket.
	DataAfterPeerClose = "after_peer_close"
	// DataOutOfWindow connects, sends the payload, then one more segment
	// on the connection whose sequence number is far outside the peer's
	// receive window.
	DataOutOfWindow = "out_of_window"
	// DataRequest connects, sends the payload, then reads until the peer
	// closes or resets the connection (3 s at most).
	DataRequest = "request"
)

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
	// Family is the netfilter family of Hook ("ipv4", "bridge", "netdev"),
	// or any of several; empty: not checked.
	Family []string
	// Netns is the scenario namespace the packet must meet its fate in
	// (one of Trace); Iface the interface of that namespace it was on.
	Netns, Iface string
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
	// Gaps mark the expectation as a known gap: what is right, which
	// pktfate does not meet yet, each on the kernels of its Kernel (the
	// first that applies to a kernel is its gap).
	Gaps []KnownGap
}

// KnownGap says why an expectation is not met yet, and on which kernels.
// A known gap is run and checked like any expectation; that it does not
// hold is reported as a known gap (not a regression), that it holds as a
// gap closed (remove the marker).
type KnownGap struct {
	Why string
	// Kernel limits the gap to some kernels (nil: every one); elsewhere
	// the expectation must hold.
	Kernel *KernelRange
}

// GapOn returns the expectation's known gap on a kernel release (nil:
// it must hold there).
func (x *Expectation) GapOn(release string) *KnownGap {
	for i := range x.Gaps {
		if x.Gaps[i].Kernel.Contains(release) {
			return &x.Gaps[i]
		}
	}
	return nil
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
	// TCPFlags selects TCP segments with all these flags set.
	TCPFlags uint8
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
	if m.TCPFlags != 0 {
		parts = append(parts, "tcp-flags "+tcpFlagString(m.TCPFlags))
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
	if len(x.Family) > 0 {
		b.WriteString(" family " + strings.Join(x.Family, "|"))
	}
	if x.Netns != "" {
		b.WriteString(" in netns " + x.Netns)
	}
	if x.Iface != "" {
		b.WriteString(" on " + x.Iface)
	}
	if len(x.ConfirmedBy) > 0 {
		b.WriteString(" confirmed by " + strings.Join(x.ConfirmedBy, "+"))
	}
	return b.String()
}

// tcpFlagLetters are the letters of the TCP flags, bit 0 (FIN) first, as
// tcpdump prints them (E is ECE, W is CWR).
const tcpFlagLetters = "FSRPAUEW"

func tcpFlagString(f uint8) string {
	var b strings.Builder
	for i := 0; i < 8; i++ {
		if f&(1<<i) != 0 {
			b.WriteByte(tcpFlagLetters[i])
		}
	}
	return b.String()
}

// parseTCPFlags reads flag letters ("SA", "R") into their bits.
func parseTCPFlags(s string) (uint8, error) {
	var f uint8
	for _, c := range s {
		i := strings.IndexRune(tcpFlagLetters, c)
		if i < 0 {
			return 0, fmt.Errorf("%q is not a TCP flag: use letters of %s (FIN SYN RST PSH ACK URG ECE CWR)", c, tcpFlagLetters)
		}
		f |= 1 << i
	}
	if f == 0 {
		return 0, fmt.Errorf("no flag given: use letters of %s", tcpFlagLetters)
	}
	return f, nil
}
