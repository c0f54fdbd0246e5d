package testutil

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
)

// Router is client --veth c0/r0-- router --veth r1/s0-- server, routed for
// IPv4 and IPv6 (RouterFamilies); firewall rules go into the router's
// namespace, which is named (RouterPath) so BPF netfilter links can be
// attached inside it.
type Router struct {
	Client, Router, Server *netns.NS
	RouterPath             string
}

// RouterAddrs are one family's addresses in a Router.
type RouterAddrs struct {
	Network                             string // "udp4" or "udp6"
	Client, RouterIn, RouterOut, Server netip.Addr
	ClientNet, ServerNet, Bits          string
}

// RouterFamilies are the Router's IPv4 and IPv6 addresses.
var RouterFamilies = []RouterAddrs{
	{Network: "udp4", Client: netip.MustParseAddr("192.0.2.1"), RouterIn: netip.MustParseAddr("192.0.2.2"),
		RouterOut: netip.MustParseAddr("198.51.100.1"), Server: netip.MustParseAddr("198.51.100.2"),
		ClientNet: "192.0.2.0/24", ServerNet: "198.51.100.0/24", Bits: "/24"},
	{Network: "udp6", Client: netip.MustParseAddr("2001:db8:1::1"), RouterIn: netip.MustParseAddr("2001:db8:1::2"),
		RouterOut: netip.MustParseAddr("2001:db8:2::1"), Server: netip.MustParseAddr("2001:db8:2::2"),
		ClientNet: "2001:db8:1::/64", ServerNet: "2001:db8:2::/64", Bits: "/64"},
}

// NewRouter builds a Router for the rest of the test.
func NewRouter(tb testing.TB) *Router {
	tb.Helper()
	name := fmt.Sprintf("pktfate-router-%d", time.Now().UnixNano()%1e9)
	router, err := netns.New(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { router.Close() })
	top := &Router{Client: NewNS(tb), Router: router, Server: NewNS(tb), RouterPath: "/run/netns/" + name}
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(netns.Veth(top.Client, "c0", top.Router, "r0"))
	must(netns.Veth(top.Router, "r1", top.Server, "s0"))
	must(top.Router.Sysctl("net/ipv4/ip_forward", "1"))
	must(top.Router.Sysctl("net/ipv6/conf/all/forwarding", "1"))
	for _, ns := range []*netns.NS{top.Client, top.Router, top.Server} {
		// No duplicate address detection: IPv6 addresses work at once.
		must(ns.Sysctl("net/ipv6/conf/all/accept_dad", "0"))
		must(ns.Sysctl("net/ipv6/conf/default/accept_dad", "0"))
	}
	for _, f := range RouterFamilies {
		must(top.Client.AddAddr("c0", f.Client.String()+f.Bits))
		must(top.Router.AddAddr("r0", f.RouterIn.String()+f.Bits))
		must(top.Router.AddAddr("r1", f.RouterOut.String()+f.Bits))
		must(top.Server.AddAddr("s0", f.Server.String()+f.Bits))
		must(top.Client.AddRoute(f.ServerNet, f.RouterIn, "c0"))
		must(top.Server.AddRoute(f.ClientNet, f.RouterOut, "s0"))
	}
	return top
}

// Firewall tools AddRule and FlushRules drive.
var FirewallTools = []string{"iptables-legacy", "iptables-nft", "nftables"}

// hookChains are the iptables table and chain, and the nftables hook, of
// each inet hook.
var hookChains = map[string]struct{ table, chain, nft string }{
	"PRE_ROUTING":  {"mangle", "PREROUTING", "prerouting"},
	"LOCAL_IN":     {"filter", "INPUT", "input"},
	"FORWARD":      {"filter", "FORWARD", "forward"},
	"LOCAL_OUT":    {"filter", "OUTPUT", "output"},
	"POST_ROUTING": {"mangle", "POSTROUTING", "postrouting"},
}

// AddRule installs, with tool (one of FirewallTools), a rule that DROPs or
// REJECTs (target) UDP of network ("udp4", "udp6") to port on hook.
func AddRule(ctx context.Context, ns *netns.NS, tool, network, hook, target string, port uint16) error {
	hc, ok := hookChains[hook]
	if !ok {
		return fmt.Errorf("unknown hook %q", hook)
	}
	if tool == "nftables" {
		stmt := strings.ToLower(target)
		fam := map[string]string{"udp4": "ipv4", "udp6": "ipv6"}[network]
		rules := fmt.Sprintf("table inet pktfate_test {\n chain %s {\n  type filter hook %s priority 0; policy accept;\n  meta nfproto %s udp dport %d %s\n }\n}\n",
			hc.nft, hc.nft, fam, port, stmt)
		if out, err := ns.Exec(ctx, rules, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("nft: %w: %s", err, out)
		}
		return nil
	}
	bin := map[string]string{"udp4": "iptables", "udp6": "ip6tables"}[network] + "-" + strings.TrimPrefix(tool, "iptables-")
	if out, err := ns.Exec(ctx, "", bin, "-w", "-t", hc.table, "-A", hc.chain, "-p", "udp", "--dport", fmt.Sprint(port), "-j", target); err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, out)
	}
	return nil
}

// FlushRules removes what AddRule installed with tool.
func FlushRules(ctx context.Context, ns *netns.NS, tool string) error {
	if tool == "nftables" {
		if out, err := ns.Exec(ctx, "", "nft", "flush", "ruleset"); err != nil {
			return fmt.Errorf("nft: %w: %s", err, out)
		}
		return nil
	}
	for _, b := range []string{"iptables", "ip6tables"} {
		bin := b + "-" + strings.TrimPrefix(tool, "iptables-")
		for _, table := range []string{"filter", "mangle"} {
			if out, err := ns.Exec(ctx, "", bin, "-w", "-t", table, "-F"); err != nil {
				return fmt.Errorf("%s: %w: %s", bin, err, out)
			}
		}
	}
	return nil
}
