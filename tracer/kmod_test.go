package tracer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/kmod"
	"github.com/pktfate/pktfate/internal/testutil"
)

func kmodFixture(t *testing.T, path string) *kmod.Drop {
	t.Helper()
	b := testutil.ReadHex(t, path)
	var d kmod.Drop
	if err := kmod.ParseMessage(b, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestKmodFill converts recorded module events (nftables drops on 6.12)
// into Events: a drop inside the hook, the packet from its network header,
// the time from the shared monotonic clock.
func TestKmodFill(t *testing.T) {
	for _, c := range []struct {
		file, hook, family, proto string
		ethertype                 uint16
	}{
		{"drop_udp4_local_in.hex", "LOCAL_IN", "ipv4", "udp", 0x0800},
		{"drop_udp6_forward.hex", "FORWARD", "ipv6", "udp", 0x86dd},
		{"drop_udp4_local_out.hex", "LOCAL_OUT", "ipv4", "udp", 0x0800},
	} {
		d := kmodFixture(t, filepath.Join("../testdata/kmod/6.12", c.file))
		s := NewKmod(KmodConfig{})
		s.decoder = NewDecoder(nil, nil, FixedClock(1_000_000_000))
		var e fate.Event
		s.fill(&e, d)
		if e.Source != "kmod" || e.Fate != fate.FateDrop || e.Verdict != "drop" || e.Hook != c.hook || e.Family != c.family ||
			e.Skb != d.Skb || e.Mono != d.Mono || !e.Time.Equal(time.Unix(0, int64(d.Mono)+1_000_000_000)) ||
			e.EtherType != c.ethertype || e.MACHeader || e.ReasonCode != d.Reason || e.Reason == "" || e.Netns != d.Netns {
			t.Errorf("%s: event %+v", c.file, e)
		}
		if e.Packet.Proto != c.proto || e.Packet.Dport < 30000 {
			t.Errorf("%s: packet %+v", c.file, e.Packet)
		}
	}
}

// TestKmodSourceKernel runs the source in the kernel matrix: a DROP rule
// in LOCAL_IN of a namespace shows as an Event of source kmod in hook
// LOCAL_IN with reason NETFILTER_DROP; on the host (no modules) CanRun
// says the module is missing.
func TestKmodSourceKernel(t *testing.T) {
	testutil.RequireRoot(t)
	s := NewKmod(KmodConfig{})
	if testutil.InVM() == "" {
		if err := s.CanRun(fate.Filters{Drops: true}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("CanRun on the host: %v, want os.ErrNotExist", err)
		}
		return
	}
	testutil.LoadModule(t)
	ns := testutil.NewNS(t)
	if out, err := ns.Exec(context.Background(), "table inet t {\n chain in {\n  type filter hook input priority 0;\n  udp dport 9 drop\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReasonsFromBTF(spec)
	if err != nil {
		t.Fatal(err)
	}
	s = NewKmod(KmodConfig{Filter: kmod.Filter{Netns: ns.Inode}, Decoder: NewDecoder(r, nil, NewClock())})
	if err := s.CanRun(fate.Filters{Drops: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan fate.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, fate.EventFunc(func(e *fate.Event) { got <- *e.Clone() })) }()
	if err := ns.Do(func() error {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("127.0.0.1:9"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.Source != "kmod" || e.Hook != "LOCAL_IN" || e.Family != "ipv4" || e.Reason != "NETFILTER_DROP" ||
			e.Netns != ns.Inode || e.Packet.Dport != 9 || e.Ifindex != 1 {
			t.Errorf("event %+v", e)
		}
		if now := MonoNow(); e.Mono > now || now-e.Mono > uint64(time.Minute) {
			t.Errorf("event time %d, now %d: not CLOCK_MONOTONIC", e.Mono, now)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Losses() {
		if c.Value != 0 {
			t.Errorf("loss %s = %d", c.Name, c.Value)
		}
	}
}
