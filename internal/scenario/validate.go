package scenario

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The file as written: strict decoding rejects unknown fields.
type rawScenario struct {
	Name        string        `yaml:"name"`
	Description string        `yaml:"description"`
	Trace       stringList    `yaml:"trace"`
	Timeout     string        `yaml:"timeout"`
	Complete    bool          `yaml:"complete"`
	Topology    rawTopology   `yaml:"topology"`
	Rules       []rawRule     `yaml:"rules"`
	Listen      []rawListener `yaml:"listen"`
	Traffic     []rawTraffic  `yaml:"traffic"`
	Expect      []rawExpect   `yaml:"expect"`
}

type rawTopology struct {
	Namespaces []rawNamespace `yaml:"namespaces"`
	Veths      []rawVeth      `yaml:"veths"`
	Devices    []rawDevice    `yaml:"devices"`
}

type rawNamespace struct {
	Name    string     `yaml:"name"`
	Sysctls []string   `yaml:"sysctls"`
	Routes  []rawRoute `yaml:"routes"`
}

type rawRoute struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
	Dev string `yaml:"dev"`
}

type rawVeth struct {
	A rawVethEnd `yaml:"a"`
	B rawVethEnd `yaml:"b"`
}

type rawVethEnd struct {
	Netns string   `yaml:"netns"`
	Name  string   `yaml:"name"`
	Addrs []string `yaml:"addrs"`
	MTU   int      `yaml:"mtu"`
}

type rawDevice struct {
	Netns string   `yaml:"netns"`
	Name  string   `yaml:"name"`
	Type  string   `yaml:"type"`
	Args  string   `yaml:"args"`
	Ports []string `yaml:"ports"`
	Addrs []string `yaml:"addrs"`
	MTU   int      `yaml:"mtu"`
}

type rawRule struct {
	Netns    string   `yaml:"netns"`
	Tool     string   `yaml:"tool"`
	Ruleset  string   `yaml:"ruleset"`
	Commands []string `yaml:"commands"`
}

type rawListener struct {
	Name    string `yaml:"name"`
	Netns   string `yaml:"netns"`
	Proto   string `yaml:"proto"`
	Addr    string `yaml:"addr"`
	RcvBuf  int    `yaml:"rcvbuf"`
	Read    *bool  `yaml:"read"`
	Accept  string `yaml:"accept"`
	Backlog *int   `yaml:"backlog"`
}

type rawTraffic struct {
	From  string `yaml:"from"`
	Proto string `yaml:"proto"`
	To    string `yaml:"to"`
	Src   string `yaml:"src"`
	Count *int   `yaml:"count"`
	TTL   int    `yaml:"ttl"`
	Size  *int   `yaml:"size"`
	// Checksum is "bad" to send a wrong UDP checksum.
	Checksum  string        `yaml:"checksum"`
	Fragments []rawFragment `yaml:"fragments"`
	TCPFlags  string        `yaml:"tcp_flags"`
	Data      string        `yaml:"data"`
	Close     string        `yaml:"close"`
}

type rawFragment struct {
	Offset *int `yaml:"offset"`
	Length *int `yaml:"length"`
}

type rawExpect struct {
	Name        string     `yaml:"name"`
	Match       rawMatch   `yaml:"match"`
	Fate        string     `yaml:"fate"`
	Reason      stringList `yaml:"reason"`
	Hook        string     `yaml:"hook"`
	Family      stringList `yaml:"family"`
	Location    stringList `yaml:"location"`
	Netns       string     `yaml:"netns"`
	Iface       string     `yaml:"iface"`
	Count       *int       `yaml:"count"`
	MinCount    *int       `yaml:"min_count"`
	ConfirmedBy []string   `yaml:"confirmed_by"`
	Kernel      string     `yaml:"kernel"`
	KnownGap    rawGaps    `yaml:"known_gap"`
}

type rawMatch struct {
	Proto    string `yaml:"proto"`
	Src      string `yaml:"src"`
	Dst      string `yaml:"dst"`
	Sport    int    `yaml:"sport"`
	Dport    int    `yaml:"dport"`
	ICMPType *int   `yaml:"icmp_type"`
	TCPFlags string `yaml:"tcp_flags"`
}

// rawGaps are known gaps: a sentence (every kernel), a mapping with why:
// and kernel:, or a list of such mappings (a gap per kernel range).
type rawGaps []rawGap

func (g *rawGaps) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var l []rawGap
		if err := n.Decode(&l); err != nil {
			return err
		}
		*g = l
		return nil
	}
	var one rawGap
	if err := n.Decode(&one); err != nil {
		return err
	}
	*g = rawGaps{one}
	return nil
}

type rawGap struct {
	Why    string `yaml:"why"`
	Kernel string `yaml:"kernel"`
}

func (g *rawGap) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		g.Why = n.Value
		return nil
	}
	type plain rawGap
	return n.Decode((*plain)(g))
}

// stringList accepts a scalar or a sequence of scalars.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = []string{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	reasonRE    = regexp.MustCompile(`^[A-Z0-9_]+$`)
	funcRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
	linkTypeRE  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	lineRE      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	obsNames    = []string{"ebpf", "nf", "dropmon", "kmod"}
	listenModes = []string{ModeRead, ModeNone, ModeHold, ModeClose, ModeReset}
	dataModes   = []string{DataNow, DataRequest, DataAfterPeerClose, DataOutOfWindow}
)

// validator turns a rawScenario into a Scenario, one section at a time,
// collecting every mistake with its place in the file.
type validator struct {
	file string
	root *yaml.Node
	errs []error
	s    *Scenario
	// devs lists each namespace's interfaces (veth ends, devices, lo).
	devs map[string]map[string]bool
	// listeners are the listener names, for close steps.
	listeners map[string]bool
}

// errf records a mistake at path (keys and sequence indexes, separated by
// dots: "expect.1.reason"); the line is the deepest node found on it.
func (v *validator) errf(path string, format string, args ...any) {
	v.errs = append(v.errs, locate(v.file, v.root, path, fmt.Sprintf(format, args...)))
}

// locate makes the FieldError of a mistake at path in a file's YAML.
func locate(file string, root *yaml.Node, path, msg string) *FieldError {
	n, field := root, ""
	line := 0
	if root != nil {
		line = root.Line
	}
	for _, part := range strings.Split(path, ".") {
		if part == "" {
			continue
		}
		if i, err := strconv.Atoi(part); err == nil {
			field += fmt.Sprintf("[%d]", i)
			if n != nil && n.Kind == yaml.SequenceNode && i < len(n.Content) {
				n = n.Content[i]
				line = n.Line
			} else {
				n = nil
			}
			continue
		}
		if field != "" {
			field += "."
		}
		field += part
		var next *yaml.Node
		if n != nil && n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == part {
					next = n.Content[j+1]
					line = n.Content[j].Line
					if next.Kind == yaml.ScalarNode {
						line = next.Line
					}
				}
			}
		}
		n = next
	}
	return &FieldError{File: file, Line: line, Field: field, Msg: msg}
}

func (v *validator) isNetns(name string) bool { return v.devs[name] != nil }

// netnsRef checks that a field names a namespace of the topology.
func (v *validator) netnsRef(path, name string) {
	if !v.isNetns(name) {
		v.errf(path, "%q is not a namespace of topology.namespaces", name)
	}
}

func (v *validator) scenario(r *rawScenario) *Scenario {
	v.s = &Scenario{File: v.file, Timeout: 5 * time.Second, root: v.root}
	v.header(r)
	v.topology(&r.Topology)
	v.trace(r.Trace)
	v.rules(r.Rules)
	v.listen(r.Listen)
	v.traffic(r.Traffic)
	v.expectations(r.Expect)
	return v.s
}

// header: name, description, timeout, complete.
func (v *validator) header(r *rawScenario) {
	s := v.s
	s.Name, s.Description, s.Complete = r.Name, strings.TrimSpace(r.Description), r.Complete
	switch {
	case r.Name == "":
		v.errf("name", "missing: every scenario has a name")
	case !nameRE.MatchString(r.Name):
		v.errf("name", "%q: use lower case letters, digits, '.', '_' and '-'", r.Name)
	}
	if s.Description == "" {
		v.errf("description", "missing: say what the scenario shows")
	}
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 || d > 5*time.Minute {
			v.errf("timeout", "%q: want a duration between 0 and 5m, such as 5s", r.Timeout)
		} else {
			s.Timeout = d
		}
	}
}

// topology: namespaces, veth pairs, devices, then each namespace's
// sysctls and routes (which may name any of those interfaces).
func (v *validator) topology(t *rawTopology) {
	v.devs = map[string]map[string]bool{}
	if len(t.Namespaces) == 0 {
		v.errf("topology.namespaces", "missing: a scenario needs at least one namespace")
	}
	for i, rn := range t.Namespaces {
		p := fmt.Sprintf("topology.namespaces.%d.name", i)
		switch {
		case rn.Name == "":
			v.errf(p, "missing")
			continue
		case !nameRE.MatchString(rn.Name) || len(rn.Name) > 32:
			v.errf(p, "%q: use up to 32 lower case letters, digits, '.', '_' and '-'", rn.Name)
		case v.isNetns(rn.Name):
			v.errf(p, "namespace %q is declared twice", rn.Name)
		}
		v.devs[rn.Name] = map[string]bool{"lo": true}
	}
	for i, rv := range t.Veths {
		var ends [2]VethEnd
		for j, re := range []rawVethEnd{rv.A, rv.B} {
			p := fmt.Sprintf("topology.veths.%d.%s", i, []string{"a", "b"}[j])
			v.netnsRef(p+".netns", re.Netns)
			v.newIface(p+".name", re.Netns, re.Name)
			ends[j] = VethEnd{Netns: re.Netns, Name: re.Name, Addrs: v.prefixes(p+".addrs", re.Addrs), MTU: v.mtu(p+".mtu", re.MTU)}
		}
		v.s.Veths = append(v.s.Veths, Veth{A: ends[0], B: ends[1]})
	}
	ported := map[string]string{} // netns/iface -> its master
	for i, rd := range t.Devices {
		p := fmt.Sprintf("topology.devices.%d", i)
		d := Device{Netns: rd.Netns, Name: rd.Name, Type: rd.Type, Addrs: v.prefixes(p+".addrs", rd.Addrs), MTU: v.mtu(p+".mtu", rd.MTU)}
		v.netnsRef(p+".netns", rd.Netns)
		if !linkTypeRE.MatchString(rd.Type) {
			v.errf(p+".type", "%q: an ip link type, such as bridge, vxlan, gre or dummy", rd.Type)
		}
		if rd.Args != "" {
			args, err := splitWords(rd.Args)
			if err != nil {
				v.errf(p+".args", "%v", err)
			}
			d.Args = args
		}
		for j, port := range rd.Ports {
			pp := fmt.Sprintf("%s.ports.%d", p, j)
			key := rd.Netns + "/" + port
			switch {
			case port == rd.Name || port == "lo" || v.devs[rd.Netns] != nil && !v.devs[rd.Netns][port]:
				v.errf(pp, "%q is not an interface of namespace %q declared before this device", port, rd.Netns)
			case ported[key] != "":
				v.errf(pp, "%q is already a port of %s", port, ported[key])
			default:
				ported[key] = rd.Name
			}
		}
		d.Ports = rd.Ports
		v.newIface(p+".name", rd.Netns, rd.Name)
		v.s.Devices = append(v.s.Devices, d)
	}
	for i, rn := range t.Namespaces {
		v.s.Namespaces = append(v.s.Namespaces, v.namespace(fmt.Sprintf("topology.namespaces.%d", i), rn))
	}
}

// newIface declares an interface in a namespace.
func (v *validator) newIface(path, netns, name string) {
	switch {
	case name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t:"):
		v.errf(path, "%q: an interface name has 1 to 15 characters, no '/', ':' or spaces", name)
	case v.devs[netns][name]:
		v.errf(path, "interface %q already exists in namespace %q", name, netns)
	case v.devs[netns] != nil:
		v.devs[netns][name] = true
	}
}

func (v *validator) prefixes(path string, addrs []string) []netip.Prefix {
	var out []netip.Prefix
	for k, a := range addrs {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			v.errf(fmt.Sprintf("%s.%d", path, k), "%q: want an address with its prefix length, such as 192.0.2.1/24 or 2001:db8::1/64", a)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

func (v *validator) mtu(path string, mtu int) int {
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		v.errf(path, "%d: an MTU is between 68 and 65535 (IPv6 needs 1280)", mtu)
	}
	return mtu
}

// namespace: sysctls and routes.
func (v *validator) namespace(p string, rn rawNamespace) Namespace {
	ns := Namespace{Name: rn.Name}
	for j, kv := range rn.Sysctls {
		optional := strings.HasPrefix(kv, "-")
		k, val, ok := strings.Cut(strings.TrimPrefix(kv, "-"), "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || k == "" || val == "" || strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
			v.errf(fmt.Sprintf("%s.sysctls.%d", p, j), "%q: want key=value, such as net.ipv4.ip_forward=1 (-key=value: skip a key that does not exist)", kv)
			continue
		}
		ns.Sysctls = append(ns.Sysctls, Sysctl{Key: k, Value: val, Optional: optional})
	}
	for j, rr := range rn.Routes {
		rp := fmt.Sprintf("%s.routes.%d", p, j)
		rt := Route{To: rr.To, Dev: rr.Dev}
		if rr.To != "default" {
			if _, err := netip.ParsePrefix(rr.To); err != nil {
				v.errf(rp+".to", "%q: want a prefix such as 198.51.100.0/24, or default", rr.To)
			}
		}
		if rr.Via != "" {
			a, err := netip.ParseAddr(rr.Via)
			if err != nil {
				v.errf(rp+".via", "%q: want an address", rr.Via)
			}
			rt.Via = a
		}
		if !v.devs[rn.Name][rr.Dev] {
			v.errf(rp+".dev", "%q is not an interface of namespace %q", rr.Dev, rn.Name)
		}
		ns.Routes = append(ns.Routes, rt)
	}
	return ns
}

// trace: one namespace or several.
func (v *validator) trace(names stringList) {
	if len(names) == 0 {
		v.errf("trace", "missing: name the namespace to trace (where the fates happen), or a list of them")
	}
	for i, n := range names {
		p := "trace"
		if len(names) > 1 {
			p = fmt.Sprintf("trace.%d", i)
		}
		switch {
		case !v.isNetns(n):
			v.errf(p, "%q is not a namespace of topology.namespaces", n)
		case slices.Contains(v.s.Trace, n):
			v.errf(p, "%q is listed twice", n)
		default:
			v.s.Trace = append(v.s.Trace, n)
		}
	}
}

func (v *validator) rules(rules []rawRule) {
	for i, rr := range rules {
		p := fmt.Sprintf("rules.%d", i)
		rule := Rule{Netns: rr.Netns, Tool: rr.Tool, Ruleset: rr.Ruleset}
		v.netnsRef(p+".netns", rr.Netns)
		switch {
		case !slices.Contains(tools, rr.Tool):
			v.errf(p+".tool", "%q: use one of %s", rr.Tool, strings.Join(tools, ", "))
		case rr.Tool == ToolNftables:
			if strings.TrimSpace(rr.Ruleset) == "" {
				v.errf(p+".ruleset", "missing: tool nftables loads a ruleset (nft -f)")
			}
			if len(rr.Commands) > 0 {
				v.errf(p+".commands", "tool nftables takes a ruleset, not commands")
			}
		default:
			if rr.Ruleset != "" {
				v.errf(p+".ruleset", "only tool nftables takes a ruleset; %s takes commands", rr.Tool)
			}
			if len(rr.Commands) == 0 {
				v.errf(p+".commands", "missing: %s needs at least one command", rr.Tool)
			}
			for j, c := range rr.Commands {
				cp := fmt.Sprintf("%s.commands.%d", p, j)
				words, err := splitWords(c)
				switch {
				case err != nil:
					v.errf(cp, "%v", err)
				case len(words) == 0:
					v.errf(cp, "empty command")
				default:
					rule.Commands = append(rule.Commands, words)
				}
			}
		}
		v.s.Rules = append(v.s.Rules, rule)
	}
}

func (v *validator) listen(listeners []rawListener) {
	v.listeners = map[string]bool{}
	for i, rl := range listeners {
		p := fmt.Sprintf("listen.%d", i)
		l := Listener{Name: rl.Name, Netns: rl.Netns, Proto: rl.Proto, RcvBuf: rl.RcvBuf, Backlog: -1, Mode: ModeRead}
		if rl.Name != "" {
			switch {
			case !nameRE.MatchString(rl.Name):
				v.errf(p+".name", "%q: use lower case letters, digits, '.', '_' and '-'", rl.Name)
			case v.listeners[rl.Name]:
				v.errf(p+".name", "%q names another listener", rl.Name)
			}
			v.listeners[rl.Name] = true
		}
		v.netnsRef(p+".netns", rl.Netns)
		if rl.Proto != "udp" && rl.Proto != "tcp" {
			v.errf(p+".proto", "%q: use udp or tcp", rl.Proto)
		}
		ap, err := netip.ParseAddrPort(rl.Addr)
		if err != nil {
			v.errf(p+".addr", "%q: want address:port, such as 192.0.2.2:5000 or [2001:db8::2]:5000", rl.Addr)
		}
		l.Addr = ap
		if rl.RcvBuf < 0 {
			v.errf(p+".rcvbuf", "must not be negative")
		}
		if rl.Read != nil && !*rl.Read {
			l.Mode = ModeNone
		}
		if rl.Accept != "" {
			switch {
			case rl.Proto != "tcp":
				v.errf(p+".accept", "only tcp listeners accept connections; a udp one has read: true or false")
			case !slices.Contains(listenModes, rl.Accept):
				v.errf(p+".accept", "%q: use one of %s", rl.Accept, strings.Join(listenModes, ", "))
			case rl.Read != nil && l.Mode != rl.Accept && !(rl.Accept == ModeRead && *rl.Read):
				v.errf(p+".read", "read: %v contradicts accept: %s; give accept alone", *rl.Read, rl.Accept)
			default:
				l.Mode = rl.Accept
			}
		}
		if rl.Backlog != nil {
			switch {
			case rl.Proto != "tcp":
				v.errf(p+".backlog", "only tcp listeners have a backlog")
			case *rl.Backlog < 0 || *rl.Backlog > 65535:
				v.errf(p+".backlog", "%d: between 0 and 65535 (the kernel caps it at net.core.somaxconn)", *rl.Backlog)
			default:
				l.Backlog = *rl.Backlog
			}
		}
		v.s.Listen = append(v.s.Listen, l)
	}
}

func (v *validator) traffic(items []rawTraffic) {
	if len(items) == 0 {
		v.errf("traffic", "missing: a scenario sends traffic")
	}
	for i, rt := range items {
		p := fmt.Sprintf("traffic.%d", i)
		if rt.Close != "" {
			v.closeStep(p, rt)
			continue
		}
		v.s.Traffic = append(v.s.Traffic, v.send(p, rt))
	}
}

// closeStep: {close: NAME}, nothing else.
func (v *validator) closeStep(p string, rt rawTraffic) {
	if !v.listeners[rt.Close] {
		v.errf(p+".close", "%q is not the name of a listener", rt.Close)
	}
	other := rt
	other.Close = ""
	if !isZeroTraffic(other) {
		v.errf(p, "a close step has only close: LISTENER; send packets in a step of their own")
	}
	v.s.Traffic = append(v.s.Traffic, Traffic{Close: rt.Close})
}

func isZeroTraffic(t rawTraffic) bool {
	return t.From == "" && t.Proto == "" && t.To == "" && t.Src == "" && t.Count == nil && t.TTL == 0 && t.Size == nil &&
		t.Checksum == "" && t.Fragments == nil && t.TCPFlags == "" && t.Data == ""
}

// send: packets from a namespace.
func (v *validator) send(p string, rt rawTraffic) Traffic {
	t := Traffic{From: rt.From, Proto: rt.Proto, TTL: rt.TTL, Count: 1, Size: 16, Data: rt.Data}
	v.netnsRef(p+".from", rt.From)
	switch rt.Proto {
	case "udp", "tcp":
		ap, err := netip.ParseAddrPort(rt.To)
		if err != nil || ap.Port() == 0 {
			v.errf(p+".to", "%q: %s needs address:port, such as 192.0.2.2:9 or [2001:db8::2]:9", rt.To, rt.Proto)
		}
		t.To = ap
	case "icmp":
		a, err := netip.ParseAddr(rt.To)
		if err != nil {
			v.errf(p+".to", "%q: icmp needs an address", rt.To)
		}
		t.To = netip.AddrPortFrom(a, 0)
	default:
		v.errf(p+".proto", "%q: use udp, tcp or icmp", rt.Proto)
	}
	if rt.Src != "" {
		a, err := netip.ParseAddr(rt.Src)
		if err != nil {
			v.errf(p+".src", "%q: want an address", rt.Src)
		} else if t.To.IsValid() && a.Is4() != t.To.Addr().Is4() {
			v.errf(p+".src", "%s and %s are of different families", a, t.To.Addr())
		}
		t.Src = a
	}
	if rt.Count != nil {
		t.Count = *rt.Count
		if t.Count < 1 || t.Count > 100000 {
			v.errf(p+".count", "%d: send between 1 and 100000 packets", t.Count)
		}
	}
	if rt.TTL < 0 || rt.TTL > 255 {
		v.errf(p+".ttl", "%d: between 1 and 255 (0 keeps the default)", rt.TTL)
	}
	if rt.Size != nil {
		t.Size = *rt.Size
		if t.Size < 0 || t.Size > 65000 {
			v.errf(p+".size", "%d: payload between 0 and 65000 bytes", t.Size)
		}
	}
	switch rt.Checksum {
	case "":
	case "bad":
		t.BadChecksum = true
		if rt.Proto != "udp" {
			v.errf(p+".checksum", "only udp traffic can have a bad checksum")
		}
	default:
		v.errf(p+".checksum", "%q: the only value is bad", rt.Checksum)
	}
	v.fragments(p, rt, &t)
	if rt.TCPFlags != "" {
		f, err := parseTCPFlags(rt.TCPFlags)
		switch {
		case err != nil:
			v.errf(p+".tcp_flags", "%v", err)
		case rt.Proto != "tcp":
			v.errf(p+".tcp_flags", "only tcp traffic has TCP flags")
		case rt.Data != "":
			v.errf(p+".tcp_flags", "raw segments (tcp_flags) open no connection: data does not apply")
		}
		t.TCPFlags = f
	}
	if rt.Data != "" {
		switch {
		case rt.Proto != "tcp":
			v.errf(p+".data", "only tcp connections have a data mode")
		case !slices.Contains(dataModes, rt.Data):
			v.errf(p+".data", "%q: use one of %s", rt.Data, strings.Join(dataModes, ", "))
		}
	} else if rt.Proto == "tcp" && rt.TCPFlags == "" {
		t.Data = DataNow
	}
	return t
}

// fragments: pieces of the datagram's IP payload, 8-byte aligned offsets.
func (v *validator) fragments(p string, rt rawTraffic, t *Traffic) {
	if rt.Fragments == nil {
		return
	}
	switch {
	case rt.Proto != "udp" && rt.Proto != "icmp":
		v.errf(p+".fragments", "only udp and icmp traffic is sent in fragments here")
	case rt.Checksum != "":
		v.errf(p+".fragments", "fragments and a bad checksum do not go together")
	case len(rt.Fragments) == 0:
		v.errf(p+".fragments", "empty: list the fragments to send, such as [{offset: 0, length: 1000}]")
	}
	for j, f := range rt.Fragments {
		fp := fmt.Sprintf("%s.fragments.%d", p, j)
		if f.Offset == nil || f.Length == nil {
			v.errf(fp, "want offset and length (bytes of the IP payload), such as {offset: 0, length: 1000}")
			continue
		}
		switch {
		case *f.Offset < 0 || *f.Offset%8 != 0 || *f.Offset > 65528:
			v.errf(fp+".offset", "%d: a fragment offset is a multiple of 8 between 0 and 65528", *f.Offset)
		case *f.Length < 1 || *f.Length > 65000:
			v.errf(fp+".length", "%d: between 1 and 65000 bytes", *f.Length)
		}
		t.Fragments = append(t.Fragments, Fragment{Offset: *f.Offset, Length: *f.Length})
	}
}

func (v *validator) expectations(items []rawExpect) {
	if len(items) == 0 {
		v.errf("expect", "missing: a scenario expects at least one fate")
	}
	names := map[string]bool{}
	for i, re := range items {
		v.s.Expect = append(v.s.Expect, v.expect(fmt.Sprintf("expect.%d", i), i, re, names))
	}
}

func (v *validator) expect(p string, i int, re rawExpect, names map[string]bool) Expectation {
	x := Expectation{Name: re.Name, Fate: re.Fate, Hook: re.Hook, Functions: re.Location, MinCount: 1, ConfirmedBy: re.ConfirmedBy,
		Netns: re.Netns, Iface: re.Iface}
	if x.Name == "" {
		x.Name = fmt.Sprintf("expect[%d]", i)
	}
	if names[x.Name] {
		v.errf(p+".name", "%q is used by another expectation", x.Name)
	}
	names[x.Name] = true
	switch re.Fate {
	case "drop", "consume":
	case "":
		v.errf(p+".fate", "missing: drop or consume")
	default:
		v.errf(p+".fate", "%q: use drop or consume", re.Fate)
	}
	for j, r := range re.Reason {
		r = strings.TrimPrefix(r, "SKB_DROP_REASON_")
		if !reasonRE.MatchString(r) {
			v.errf(p+".reason", "%q: a drop reason is the kernel's name without SKB_DROP_REASON_, such as NO_SOCKET", re.Reason[j])
			continue
		}
		x.Reasons = append(x.Reasons, r)
	}
	if len(x.Reasons) > 0 && re.Fate == "consume" {
		v.errf(p+".reason", "consumed packets have no drop reason")
	}
	v.netfilter(p, re, &x)
	for _, fn := range re.Location {
		if !funcRE.MatchString(fn) {
			v.errf(p+".location", "%q: name a kernel function, without +offset", fn)
		}
	}
	v.where(p, re)
	v.counts(p, re, &x)
	for j, o := range re.ConfirmedBy {
		if !slices.Contains(obsNames, o) {
			v.errf(fmt.Sprintf("%s.confirmed_by.%d", p, j), "%q: observers are %s", o, strings.Join(obsNames, ", "))
		}
	}
	if re.Kernel != "" {
		k, err := parseKernelRange(re.Kernel)
		if err != nil {
			v.errf(p+".kernel", "%q: %v", re.Kernel, err)
		}
		x.Kernel = k
	}
	for j, g := range re.KnownGap {
		gp := p + ".known_gap"
		if len(re.KnownGap) > 1 {
			gp = fmt.Sprintf("%s.known_gap.%d", p, j)
		}
		kg := KnownGap{Why: strings.TrimSpace(g.Why)}
		if kg.Why == "" {
			v.errf(gp, "say why pktfate does not meet the expectation yet (and, with kernel:, where)")
		}
		if g.Kernel != "" {
			k, err := parseKernelRange(g.Kernel)
			if err != nil {
				v.errf(gp+".kernel", "%q: %v", g.Kernel, err)
			}
			kg.Kernel = k
		} else if j < len(re.KnownGap)-1 {
			v.errf(gp+".kernel", "missing: only the last gap of a list may apply to every kernel")
		}
		x.Gaps = append(x.Gaps, kg)
	}
	x.Match = v.match(p+".match", re.Match)
	return x
}

// netfilter: hook and family, named as the kernel names them.
func (v *validator) netfilter(p string, re rawExpect, x *Expectation) {
	if re.Hook != "" && re.Hook != "none" && !slices.Contains(hookNames(""), re.Hook) {
		v.errf(p+".hook", "%q: use one of %s, or none", re.Hook, strings.Join(hookNames(""), ", "))
	}
	for j, f := range re.Family {
		fp := p + ".family"
		if len(re.Family) > 1 {
			fp = fmt.Sprintf("%s.family.%d", p, j)
		}
		switch {
		case !slices.Contains(familyNames(), f):
			v.errf(fp, "%q: use one of %s", f, strings.Join(familyNames(), ", "))
		case re.Hook == "none":
			v.errf(fp, "hook: none (outside netfilter) has no family")
		case re.Hook != "" && !slices.Contains(hookNames(f), re.Hook):
			v.errf(fp, "family %s has no hook %s: its hooks are %s", f, re.Hook, strings.Join(hookNames(f), ", "))
		default:
			x.Family = append(x.Family, f)
		}
	}
}

// where: the namespace and interface of the fate.
func (v *validator) where(p string, re rawExpect) {
	if re.Netns != "" && !slices.Contains(v.s.Trace, re.Netns) {
		v.errf(p+".netns", "%q is not traced: list it in trace", re.Netns)
	}
	if re.Iface == "" {
		return
	}
	in := v.s.Trace
	if re.Netns != "" {
		in = []string{re.Netns}
	}
	for _, ns := range in {
		if v.devs[ns][re.Iface] {
			return
		}
	}
	v.errf(p+".iface", "%q is not an interface of the namespace%s %s", re.Iface, map[bool]string{true: "s", false: ""}[len(in) > 1], strings.Join(in, ", "))
}

func (v *validator) counts(p string, re rawExpect, x *Expectation) {
	if re.Count != nil && re.MinCount != nil {
		v.errf(p+".min_count", "give count (exact) or min_count, not both")
	}
	if re.Count != nil {
		if *re.Count < 0 {
			v.errf(p+".count", "must not be negative")
		}
		c := *re.Count
		x.Count = &c
	}
	if re.MinCount != nil {
		if *re.MinCount < 1 {
			v.errf(p+".min_count", "must be at least 1 (use count: 0 for a fate that must not happen)")
		}
		x.MinCount = *re.MinCount
	}
}

func (v *validator) match(p string, m rawMatch) Match {
	var out Match
	out.Proto = m.Proto
	switch m.Proto {
	case "", "udp", "tcp", "icmp", "icmp6", "ipv4", "ipv6", "arp":
	default:
		v.errf(p+".proto", "%q: use udp, tcp, icmp, icmp6, ipv4, ipv6 or arp", m.Proto)
	}
	for _, f := range []struct {
		key string
		val string
		dst *netip.Addr
	}{{"src", m.Src, &out.Src}, {"dst", m.Dst, &out.Dst}} {
		if f.val == "" {
			continue
		}
		a, err := netip.ParseAddr(f.val)
		if err != nil {
			v.errf(p+"."+f.key, "%q: want an address", f.val)
		}
		*f.dst = a
	}
	for _, f := range []struct {
		key string
		val int
		dst *uint16
	}{{"sport", m.Sport, &out.Sport}, {"dport", m.Dport, &out.Dport}} {
		if f.val < 0 || f.val > 65535 {
			v.errf(p+"."+f.key, "%d: a port is between 1 and 65535", f.val)
		}
		*f.dst = uint16(f.val)
	}
	if m.ICMPType != nil {
		if *m.ICMPType < 0 || *m.ICMPType > 255 {
			v.errf(p+".icmp_type", "%d: between 0 and 255", *m.ICMPType)
		}
		t := uint8(*m.ICMPType)
		out.ICMPType = &t
	}
	if m.TCPFlags != "" {
		f, err := parseTCPFlags(m.TCPFlags)
		if err != nil {
			v.errf(p+".tcp_flags", "%v", err)
		}
		out.TCPFlags = f
	}
	if out == (Match{}) {
		v.errf(p, "missing: say which packets (proto, src, dst, sport, dport, icmp_type, tcp_flags)")
	}
	return out
}

var kernelRangeRE = regexp.MustCompile(`^(<=|>=|<|>|==)\s*(\d+)\.(\d+)$`)

func parseKernelRange(s string) (*KernelRange, error) {
	m := kernelRangeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nil, fmt.Errorf("want an operator (<, <=, >, >=, ==) and MAJOR.MINOR, such as \">=6.3\"")
	}
	k := &KernelRange{Op: m[1]}
	k.Major, _ = strconv.Atoi(m[2])
	k.Minor, _ = strconv.Atoi(m[3])
	return k, nil
}
