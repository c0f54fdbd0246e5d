package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is a mistake in a scenario file: where it is and what is wrong.
type FieldError struct {
	File  string
	Line  int    // 0 when unknown
	Field string // "expect[1].reason"; "" for the whole file
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// The file as written: strict decoding rejects unknown fields.
type rawScenario struct {
	Name        string        `yaml:"name"`
	Description string        `yaml:"description"`
	Trace       string        `yaml:"trace"`
	Timeout     string        `yaml:"timeout"`
	Topology    rawTopology   `yaml:"topology"`
	Rules       []rawRule     `yaml:"rules"`
	Listen      []rawListener `yaml:"listen"`
	Traffic     []rawTraffic  `yaml:"traffic"`
	Expect      []rawExpect   `yaml:"expect"`
}

type rawTopology struct {
	Namespaces []rawNamespace `yaml:"namespaces"`
	Veths      []rawVeth      `yaml:"veths"`
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
}

type rawRule struct {
	Netns    string   `yaml:"netns"`
	Tool     string   `yaml:"tool"`
	Ruleset  string   `yaml:"ruleset"`
	Commands []string `yaml:"commands"`
}

type rawListener struct {
	Netns  string `yaml:"netns"`
	Proto  string `yaml:"proto"`
	Addr   string `yaml:"addr"`
	RcvBuf int    `yaml:"rcvbuf"`
	Read   *bool  `yaml:"read"`
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
	Checksum string `yaml:"checksum"`
}

type rawExpect struct {
	Name        string     `yaml:"name"`
	Match       rawMatch   `yaml:"match"`
	Fate        string     `yaml:"fate"`
	Reason      stringList `yaml:"reason"`
	Hook        string     `yaml:"hook"`
	Location    stringList `yaml:"location"`
	Count       *int       `yaml:"count"`
	MinCount    *int       `yaml:"min_count"`
	ConfirmedBy []string   `yaml:"confirmed_by"`
	Kernel      string     `yaml:"kernel"`
}

type rawMatch struct {
	Proto    string `yaml:"proto"`
	Src      string `yaml:"src"`
	Dst      string `yaml:"dst"`
	Sport    int    `yaml:"sport"`
	Dport    int    `yaml:"dport"`
	ICMPType *int   `yaml:"icmp_type"`
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
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	reasonRE = regexp.MustCompile(`^[A-Z0-9_]+$`)
	funcRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
	lineRE   = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	hooks    = []string{"PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING", "INGRESS", "EGRESS", "none"}
	obsNames = []string{"ebpf", "nf", "dropmon", "kmod"}
)

// ParseFile reads and validates one scenario file.
func ParseFile(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FieldError{File: path, Msg: fmt.Sprintf("reading scenario: %v", err)}
	}
	return Parse(path, data)
}

// Parse validates a scenario read from file. Every mistake found is
// returned (errors.Join of *FieldError), each naming the file, the line
// and the field.
func Parse(file string, data []byte) (*Scenario, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, nil, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: 1, Msg: "a scenario is a YAML mapping (name:, description:, topology:, ...)"}
	}
	var raw rawScenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, yamlError(file, root.Content[0], err)
	}
	v := &validator{file: file, root: root.Content[0]}
	s := v.scenario(&raw)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return s, nil
}

// yamlError turns yaml.v3's "line N: ..." messages into FieldErrors.
func yamlError(file string, root *yaml.Node, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, m := range msgs {
		fe := &FieldError{File: file, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			fe.Line, _ = strconv.Atoi(sm[1])
			fe.Msg = sm[2]
			if root != nil {
				fe.Field = fieldAtLine(root, fe.Line, "")
			}
		}
		fe.Msg = strings.ReplaceAll(fe.Msg, "scenario.raw", "")
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

// fieldAtLine finds the path of the key (or sequence item) on a line.
func fieldAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			if k.Line == line {
				return p
			}
			if f := fieldAtLine(val, line, p); f != "" {
				return f
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode && c.Line == line {
				return p
			}
			if f := fieldAtLine(c, line, p); f != "" {
				return f
			}
		}
	}
	return ""
}

type validator struct {
	file string
	root *yaml.Node
	errs []error
}

// errf records a mistake at path (keys and sequence indexes, separated by
// dots: "expect.1.reason"); the line is the deepest node found on it.
func (v *validator) errf(path string, format string, args ...any) {
	n, field := v.root, ""
	line := v.root.Line
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
	v.errs = append(v.errs, &FieldError{File: v.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) scenario(r *rawScenario) *Scenario {
	s := &Scenario{File: v.file, Name: r.Name, Description: strings.TrimSpace(r.Description), Trace: r.Trace, Timeout: 5 * time.Second}
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
	nsNames := map[string]bool{}
	devs := map[string]map[string]bool{} // netns -> interfaces
	if len(r.Topology.Namespaces) == 0 {
		v.errf("topology.namespaces", "missing: a scenario needs at least one namespace")
	}
	for i, rn := range r.Topology.Namespaces {
		p := fmt.Sprintf("topology.namespaces.%d", i)
		switch {
		case rn.Name == "":
			v.errf(p+".name", "missing")
		case !nameRE.MatchString(rn.Name) || len(rn.Name) > 32:
			v.errf(p+".name", "%q: use up to 32 lower case letters, digits, '.', '_' and '-'", rn.Name)
		case nsNames[rn.Name]:
			v.errf(p+".name", "namespace %q is declared twice", rn.Name)
		}
		nsNames[rn.Name] = true
		devs[rn.Name] = map[string]bool{"lo": true}
	}
	for i, rv := range r.Topology.Veths {
		p := fmt.Sprintf("topology.veths.%d", i)
		var ends [2]VethEnd
		for j, re := range []rawVethEnd{rv.A, rv.B} {
			ep := p + "." + []string{"a", "b"}[j]
			ends[j] = VethEnd{Netns: re.Netns, Name: re.Name}
			if !nsNames[re.Netns] {
				v.errf(ep+".netns", "%q is not a namespace of topology.namespaces", re.Netns)
			}
			switch {
			case re.Name == "" || len(re.Name) > 15 || strings.ContainsAny(re.Name, "/ \t"):
				v.errf(ep+".name", "%q: an interface name has 1 to 15 characters, no '/' or spaces", re.Name)
			case devs[re.Netns][re.Name]:
				v.errf(ep+".name", "interface %q already exists in namespace %q", re.Name, re.Netns)
			case devs[re.Netns] != nil:
				devs[re.Netns][re.Name] = true
			}
			for k, a := range re.Addrs {
				pfx, err := netip.ParsePrefix(a)
				if err != nil {
					v.errf(fmt.Sprintf("%s.addrs.%d", ep, k), "%q: want an address with its prefix length, such as 192.0.2.1/24 or 2001:db8::1/64", a)
					continue
				}
				ends[j].Addrs = append(ends[j].Addrs, pfx)
			}
		}
		s.Veths = append(s.Veths, Veth{A: ends[0], B: ends[1]})
	}
	for i, rn := range r.Topology.Namespaces {
		p := fmt.Sprintf("topology.namespaces.%d", i)
		ns := Namespace{Name: rn.Name}
		for j, kv := range rn.Sysctls {
			k, val, ok := strings.Cut(kv, "=")
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if !ok || k == "" || val == "" || strings.Contains(k, "..") {
				v.errf(fmt.Sprintf("%s.sysctls.%d", p, j), "%q: want key=value, such as net.ipv4.ip_forward=1", kv)
				continue
			}
			ns.Sysctls = append(ns.Sysctls, Sysctl{Key: k, Value: val})
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
			if !devs[rn.Name][rr.Dev] {
				v.errf(rp+".dev", "%q is not an interface of namespace %q", rr.Dev, rn.Name)
			}
			ns.Routes = append(ns.Routes, rt)
		}
		s.Namespaces = append(s.Namespaces, ns)
	}
	switch {
	case r.Trace == "":
		v.errf("trace", "missing: name the namespace to trace (where the fates happen)")
	case !nsNames[r.Trace]:
		v.errf("trace", "%q is not a namespace of topology.namespaces", r.Trace)
	}
	for i, rr := range r.Rules {
		p := fmt.Sprintf("rules.%d", i)
		rule := Rule{Netns: rr.Netns, Tool: rr.Tool, Ruleset: rr.Ruleset}
		if !nsNames[rr.Netns] {
			v.errf(p+".netns", "%q is not a namespace of topology.namespaces", rr.Netns)
		}
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
				f := strings.Fields(c)
				if len(f) == 0 {
					v.errf(fmt.Sprintf("%s.commands.%d", p, j), "empty command")
					continue
				}
				rule.Commands = append(rule.Commands, f)
			}
		}
		s.Rules = append(s.Rules, rule)
	}
	for i, rl := range r.Listen {
		p := fmt.Sprintf("listen.%d", i)
		l := Listener{Netns: rl.Netns, Proto: rl.Proto, RcvBuf: rl.RcvBuf, Read: rl.Read == nil || *rl.Read}
		if !nsNames[rl.Netns] {
			v.errf(p+".netns", "%q is not a namespace of topology.namespaces", rl.Netns)
		}
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
		s.Listen = append(s.Listen, l)
	}
	if len(r.Traffic) == 0 {
		v.errf("traffic", "missing: a scenario sends traffic")
	}
	for i, rt := range r.Traffic {
		p := fmt.Sprintf("traffic.%d", i)
		t := Traffic{From: rt.From, Proto: rt.Proto, TTL: rt.TTL, Count: 1, Size: 16}
		if !nsNames[rt.From] {
			v.errf(p+".from", "%q is not a namespace of topology.namespaces", rt.From)
		}
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
			if t.Size < 0 || t.Size > 60000 {
				v.errf(p+".size", "%d: payload between 0 and 60000 bytes", t.Size)
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
		s.Traffic = append(s.Traffic, t)
	}
	if len(r.Expect) == 0 {
		v.errf("expect", "missing: a scenario expects at least one fate")
	}
	names := map[string]bool{}
	for i, re := range r.Expect {
		s.Expect = append(s.Expect, v.expect(fmt.Sprintf("expect.%d", i), i, re, names))
	}
	return s
}

func (v *validator) expect(p string, i int, re rawExpect, names map[string]bool) Expectation {
	x := Expectation{Name: re.Name, Fate: re.Fate, Hook: re.Hook, Functions: re.Location, MinCount: 1, ConfirmedBy: re.ConfirmedBy}
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
	if re.Hook != "" && !slices.Contains(hooks, re.Hook) {
		v.errf(p+".hook", "%q: use one of %s", re.Hook, strings.Join(hooks, ", "))
	}
	for _, fn := range re.Location {
		if !funcRE.MatchString(fn) {
			v.errf(p+".location", "%q: name a kernel function, without +offset", fn)
		}
	}
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
	m := re.Match
	x.Match.Proto = m.Proto
	switch m.Proto {
	case "", "udp", "tcp", "icmp", "icmp6", "ipv4", "ipv6", "arp":
	default:
		v.errf(p+".match.proto", "%q: use udp, tcp, icmp, icmp6, ipv4, ipv6 or arp", m.Proto)
	}
	for _, f := range []struct {
		key string
		val string
		dst *netip.Addr
	}{{"src", m.Src, &x.Match.Src}, {"dst", m.Dst, &x.Match.Dst}} {
		if f.val == "" {
			continue
		}
		a, err := netip.ParseAddr(f.val)
		if err != nil {
			v.errf(p+".match."+f.key, "%q: want an address", f.val)
		}
		*f.dst = a
	}
	for _, f := range []struct {
		key string
		val int
		dst *uint16
	}{{"sport", m.Sport, &x.Match.Sport}, {"dport", m.Dport, &x.Match.Dport}} {
		if f.val < 0 || f.val > 65535 {
			v.errf(p+".match."+f.key, "%d: a port is between 1 and 65535", f.val)
		}
		*f.dst = uint16(f.val)
	}
	if m.ICMPType != nil {
		if *m.ICMPType < 0 || *m.ICMPType > 255 {
			v.errf(p+".match.icmp_type", "%d: between 0 and 255", *m.ICMPType)
		}
		t := uint8(*m.ICMPType)
		x.Match.ICMPType = &t
	}
	if x.Match == (Match{}) {
		v.errf(p+".match", "missing: say which packets (proto, src, dst, sport, dport, icmp_type)")
	}
	return x
}

var kernelRangeRE = regexp.MustCompile(`^(<=|>=|<|>|==)\s*(\d+)\.(\d+)$`)

func parseKernelRange(s string) (*KernelRange, error) {
	m := kernelRangeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nil, errors.New("want an operator (<, <=, >, >=, ==) and MAJOR.MINOR, such as \">=6.3\"")
	}
	k := &KernelRange{Op: m[1]}
	k.Major, _ = strconv.Atoi(m[2])
	k.Minor, _ = strconv.Atoi(m[3])
	return k, nil
}

// Load reads scenarios from files and directories (every *.yaml and *.yml
// file in a directory, in name order). Names must be unique.
func Load(paths []string) ([]*Scenario, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, &FieldError{File: p, Msg: fmt.Sprintf("reading scenario: %v", errors.Unwrap(err))}
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing scenarios in %s: %w", p, err)
		}
		if len(found) == 0 {
			return nil, &FieldError{File: p, Msg: "no scenario files (*.yaml) in this directory"}
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	var out []*Scenario
	var errs []error
	byName := map[string]string{}
	for _, f := range files {
		s, err := ParseFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, ok := byName[s.Name]; ok {
			errs = append(errs, &FieldError{File: f, Line: 1, Field: "name", Msg: fmt.Sprintf("%q is also the name of %s", s.Name, other)})
			continue
		}
		byName[s.Name] = f
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}
