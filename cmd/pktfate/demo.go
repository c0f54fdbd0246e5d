package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/capture"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/render"
	"github.com/pktfate/pktfate/tracer"
)

type demoConfig struct {
	OutputJSON bool
	Timeout    time.Duration
}

func parseDemo(args []string, stderr io.Writer) (demoConfig, error) {
	var cfg demoConfig
	fs := flag.NewFlagSet("pktfate demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&cfg.OutputJSON, "output-json", false, "print the traced events as NDJSON")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "how long to wait for every packet's fate")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pktfate demo [flags]\n\n"+
			"Creates two network namespaces joined by a veth pair, sends packets that meet\n"+
			"known fates, traces them, prints the report and removes everything it created.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, usageErrorf("demo takes no arguments")
	}
	return cfg, nil
}

// Addresses from the documentation ranges (RFC 5737), used only inside the
// demo's own namespaces.
var (
	demoClient     = netip.MustParseAddr("192.0.2.1")
	demoServer     = netip.MustParseAddr("192.0.2.2")
	demoUnroutable = netip.MustParseAddr("198.51.100.1")
)

const (
	demoNSPrefix   = "pktfate-demo-"
	demoClosedPort = 9
	demoNftPort    = 7777
	demoRuleset    = `table inet pktfate_demo {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 7777 drop
	}
}
`
)

// demoScenario is one packet the demo sends and the fate it should meet.
type demoScenario struct {
	what       string
	wantFate   fate.Fate
	wantReason string // "" accepts any reason
	wantHook   string // checked when the netfilter attribution runs
	match      func(p *fate.Packet) bool
	seen       *fate.Event
}

func demoScenarios() []*demoScenario {
	return []*demoScenario{
		{what: fmt.Sprintf("UDP to closed port %d", demoClosedPort), wantFate: fate.FateDrop, wantReason: "NO_SOCKET",
			match: func(p *fate.Packet) bool {
				return p.Proto == "udp" && p.Dst == demoServer && p.Dport == demoClosedPort
			}},
		{what: fmt.Sprintf("UDP to port %d, nftables DROP rule", demoNftPort), wantFate: fate.FateDrop, wantReason: "NETFILTER_DROP", wantHook: "LOCAL_IN",
			match: func(p *fate.Packet) bool { return p.Proto == "udp" && p.Dst == demoServer && p.Dport == demoNftPort }},
		{what: "UDP to " + demoUnroutable.String() + ", no route on the router", wantFate: fate.FateDrop,
			match: func(p *fate.Packet) bool { return p.Proto == "udp" && p.Dst == demoUnroutable }},
		{what: "ICMP echo request, delivered", wantFate: fate.FateConsume,
			match: func(p *fate.Packet) bool { return p.Proto == "icmp" && p.Dst == demoServer && p.ICMPType == 8 }},
	}
}

// demoNet is the demo's topology: client --veth-- server (a router with no
// route beyond its own subnet).
type demoNet struct {
	client, server *netns.NS
}

func (d *demoNet) Close() error {
	var errs []error
	for _, ns := range []*netns.NS{d.client, d.server} {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}

func setupDemoNet(ctx context.Context) (_ *demoNet, err error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, errors.New("the demo needs nft (nftables) to install its DROP rule: run `make deps` or `apt-get install nftables`")
	}
	netns.RemoveStale(demoNSPrefix)
	d := &demoNet{}
	defer func() {
		if err != nil {
			d.Close() // what was made before the failure
		}
	}()
	base := fmt.Sprintf("%s%d-", demoNSPrefix, os.Getpid())
	if d.client, err = netns.New(base + "client"); err != nil {
		return nil, err
	}
	if d.server, err = netns.New(base + "server"); err != nil {
		return nil, err
	}
	if err := netns.Veth(d.client, "pfdemo0", d.server, "pfdemo1"); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return d.client.AddAddr("pfdemo0", demoClient.String()+"/24") },
		func() error { return d.server.AddAddr("pfdemo1", demoServer.String()+"/24") },
		func() error { return d.server.Sysctl("net/ipv4/ip_forward", "1") },
		func() error { return d.client.AddRoute("198.51.100.0/24", demoServer, "pfdemo0") },
		func() error {
			_, err := d.server.Exec(ctx, demoRuleset, "nft", "-f", "-")
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("setting up the demo network: %w", err)
		}
	}
	return d, nil
}

func sendDemoTraffic(d *demoNet) error {
	var udp *net.UDPConn
	var ping *icmp.PacketConn
	err := d.client.Do(func() error {
		var err error
		if udp, err = net.ListenUDP("udp4", nil); err != nil {
			return err
		}
		ping, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("opening demo sockets: %w", err)
	}
	defer udp.Close()
	defer ping.Close()
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(demoServer, demoClosedPort),
		netip.AddrPortFrom(demoServer, demoNftPort),
		netip.AddrPortFrom(demoUnroutable, demoClosedPort),
	} {
		if _, err := udp.WriteToUDPAddrPort([]byte("pktfate demo"), dst); err != nil {
			return fmt.Errorf("sending UDP to %v: %w", dst, err)
		}
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: 1, Data: []byte("pktfate")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := ping.WriteTo(b, &net.IPAddr{IP: demoServer.AsSlice()}); err != nil {
		return fmt.Errorf("sending ICMP echo: %w", err)
	}
	return nil
}

func runDemo(ctx context.Context, cfg demoConfig, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (it creates network namespaces and loads BPF programs): run sudo pktfate demo")
	}
	d, err := setupDemoNet(ctx)
	if err != nil {
		return err
	}
	defer d.Close()

	kernel, err := tracer.KernelBTF()
	if err != nil {
		return fmt.Errorf("loading kernel BTF (pktfate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	decoder, err := tracer.DefaultDecoder(kernel)
	if err != nil {
		return err
	}
	sources, status, err := tracer.ForNetns(tracer.SelectConfig{Kernel: kernel, Decoder: decoder})(d.server.Inode, "/run/netns/"+d.server.Name)
	if err != nil {
		return err
	}
	hooks := false
	for _, src := range sources {
		hooks = hooks || slices.Contains(src.Observers(), fate.ObserverNF)
	}
	filter, err := pcapfilter.Compile("udp or icmp")
	if err != nil {
		return err
	}
	// NDJSON on stdout stays NDJSON: the banner and the table go to
	// stderr then.
	info := stdout
	var r render.Renderer
	if cfg.OutputJSON {
		r, info = render.NewNDJSON(stdout), stderr
	} else {
		r = newText(stdout, traceConfig{}, d.server.Inode)
	}
	fmt.Fprintf(info, "pktfate demo: client %s --veth-- server %s (router without a route to %s),\n"+
		"nftables drops UDP port %d on the server; tracing the server's namespace (netns %d)\n\n",
		demoClient, demoServer, demoUnroutable, demoNftPort, d.server.Inode)

	scenarios := demoScenarios()
	var mu sync.Mutex
	allSeen := make(chan struct{})
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var sendErr error
	_, err = capture.Run(ctx, capture.Config{
		Now:       tracer.MonoNow,
		Sources:   sources,
		FatesOnly: !cfg.OutputJSON,
		Status:    status,
		Filter:    filter,
		Renderer:  r,
		Ready: func() error {
			go func() {
				if err := sendDemoTraffic(d); err != nil {
					mu.Lock()
					sendErr = err
					mu.Unlock()
					cancel()
				}
			}()
			return nil
		},
		OnEvent: func(e *fate.Event) {
			mu.Lock()
			defer mu.Unlock()
			missing := 0
			for _, s := range scenarios {
				if s.seen == nil && s.match(&e.Packet) {
					s.seen = e.Clone()
				}
				if s.seen == nil {
					missing++
				}
			}
			if missing == 0 {
				select {
				case <-allSeen:
				default:
					close(allSeen)
					// Leave time for late events of the same packets, then stop.
					time.AfterFunc(300*time.Millisecond, cancel)
				}
			}
		},
	}, nil)
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if sendErr != nil {
		return sendErr
	}
	return demoReport(info, scenarios, hooks)
}

func demoReport(w io.Writer, scenarios []*demoScenario, hooks bool) error {
	fmt.Fprintf(w, "\nwhat happened to each packet:\n")
	failed := 0
	for _, s := range scenarios {
		want := s.wantFate.String()
		if s.wantReason != "" {
			want += " " + s.wantReason
		}
		wantHook := ""
		if hooks {
			wantHook = s.wantHook
		}
		if wantHook != "" {
			want += " in " + wantHook
		}
		got, verdict := "not observed", "FAIL"
		if e := s.seen; e != nil {
			got = e.Fate.String()
			if e.Reason != "" {
				got += " " + e.Reason
			}
			got += " at " + e.Location
			if e.Hook != "" {
				got += " in " + e.Family + " " + e.Hook
			}
			if e.Fate == s.wantFate && (s.wantReason == "" || e.Reason == s.wantReason) && e.Hook == wantHook {
				verdict = "ok"
			}
		}
		if verdict != "ok" {
			failed++
		}
		fmt.Fprintf(w, "  %-4s %-44s expected %-32s observed %s\n", verdict, s.what, want, got)
	}
	if failed > 0 {
		return fmt.Errorf("demo: %d of %d packets did not meet the expected fate", failed, len(scenarios))
	}
	return nil
}
