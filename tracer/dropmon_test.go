package tracer

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/genl/dropmon"
	"github.com/pktfate/pktfate/internal/testutil"
)

func dropmonFixture(t *testing.T, path string) *dropmon.Alert {
	t.Helper()
	b := testutil.ReadHex(t, path)
	var a dropmon.Alert
	if _, err := dropmon.ParseMessage(b, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func TestDropmonFill(t *testing.T) {
	a := dropmonFixture(t, "../testdata/dropmon/uapi/packet_sw_udp4.hex")
	s := NewDropmon(DropmonConfig{})
	s.decoder = NewDecoder(nil, nil, FixedClock(1_000_000_000))
	s.clock = s.decoder.Clock
	var e fate.Event
	s.fill(&e, &a.Packet)
	if e.Source != "dropmon" || e.Fate != fate.FateDrop || e.Reason != "NO_SOCKET" || e.Location != "__udp4_lib_rcv+0x6ba" ||
		e.Ifindex != 1 || e.Len != 46 || e.EtherType != 0x0800 || !e.MACHeader {
		t.Errorf("event %+v", e)
	}
	if e.Packet.Proto != "udp" || e.Packet.Sport != 40000 || e.Packet.Dport != 9999 || e.Packet.Src.String() != "127.0.0.1" {
		t.Errorf("packet %+v", e.Packet)
	}
	if !e.Time.Equal(time.Unix(0, 1795751640123456789)) || e.Mono != 1795751640123456789-1_000_000_000 {
		t.Errorf("time %s mono %d", e.Time, e.Mono)
	}
}

// TestDropmonSourceKernel runs the source on the kernel matrix: UDP to a
// closed port in a netns arrives as a drop event with reason NO_SOCKET.
func TestDropmonSourceKernel(t *testing.T) {
	if testutil.InVM() == "" {
		t.Skip("needs NET_DM: runs in the kernel matrix")
	}
	src := NewDropmon(DropmonConfig{MarkerPath: "-"})
	if err := src.CanRun(fate.Filters{Drops: true}); err != nil {
		t.Fatal(err)
	}
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ns := testutil.NewNS(t)
	var conn *net.UDPConn
	var closed netip.AddrPort
	err := ns.Do(func() error {
		p, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		closed = p.LocalAddr().(*net.UDPAddr).AddrPort()
		p.Close()
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDPAddrPort([]byte("adapter"), closed); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got *fate.Event
	err = src.Run(ctx, fate.EventFunc(func(e *fate.Event) {
		if got == nil && e.Packet.Proto == "udp" && e.Packet.Dport == closed.Port() {
			got = e.Clone()
			cancel()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatal("no event")
	}
	t.Logf("event: %+v", *got)
	if got.Reason != "NO_SOCKET" || got.Source != "dropmon" || !strings.Contains(got.Location, "udp") || strings.Contains(got.Location, "/") {
		t.Errorf("event %+v", *got)
	}
	if d := time.Since(got.Time); d < 0 || d > time.Minute {
		t.Errorf("time %s", got.Time)
	}
	if d := int64(MonoNow()) - int64(got.Mono); d < 0 || d > int64(time.Minute) {
		t.Errorf("mono %d vs now %d", got.Mono, MonoNow())
	}
	for _, c := range src.Losses() {
		t.Logf("loss %s = %d", c.Name, c.Value)
	}
}
