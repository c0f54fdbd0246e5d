package dropmon

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"

	"github.com/pktfate/pktfate/genl/internal/mcast/mcasttest"
)

// recordedKernels are the kernel lines with fixtures recorded in the VM
// matrix (testdata/dropmon/<line>/, see its README).
var recordedKernels = []string{"6.1", "6.12", "7.2"}

// TestRecordedPacketAlerts decodes the packet alerts recorded from real
// kernels: UDP from 127.0.0.1 to a closed port on lo, payloads
// "pktfate-dropmon-0" to "-2", numbered in order of arrival, which is not
// the order of sending (NET_DM queues per CPU).
func TestRecordedPacketAlerts(t *testing.T) {
	for _, k := range recordedKernels {
		seen := map[string]bool{}
		for i := range 3 {
			name := fmt.Sprintf("%s/packet_udp4_noport_%d.hex", k, i)
			t.Run(name, func(t *testing.T) {
				var a Alert
				b := readHex(t, filepath.Join(fixtureDir, name))
				if _, err := ParseMessage(b, &a); err != nil {
					t.Fatal(err)
				}
				p := a.Packet
				if a.Kind != KindPacket || p.Origin != OriginSoftware || p.PC == 0 || p.Reason != "NO_SOCKET" ||
					!strings.Contains(p.Symbol, "udp") || p.Ifindex != 1 || p.Proto != 0x0800 || p.Timestamp == 0 {
					t.Errorf("alert %+v", p)
				}
				src, dst, data, ok := udpDatagram(p.Payload)
				lo := netip.MustParseAddr("127.0.0.1")
				if !ok || src.Addr() != lo || dst.Addr() != lo || !strings.HasPrefix(string(data), "pktfate-dropmon-") {
					t.Errorf("payload %s > %s %q", src, dst, data)
				}
				seen[string(data)] = true
				if int(p.OrigLen) != len(p.Payload) {
					t.Errorf("original length %d, payload %d (untruncated)", p.OrigLen, len(p.Payload))
				}
			})
		}
		if len(seen) != 3 {
			t.Errorf("%s: payloads %v, want three different ones", k, seen)
		}
	}
}

func TestRecordedSummary(t *testing.T) {
	for _, k := range recordedKernels {
		var a Alert
		if _, err := ParseMessage(readHex(t, filepath.Join(fixtureDir, k, "summary.hex")), &a); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var pkt Alert
		if _, err := ParseMessage(readHex(t, filepath.Join(fixtureDir, k, "packet_udp4_noport_0.hex")), &pkt); err != nil {
			t.Fatal(err)
		}
		// The summary was recorded in the same boot: the location is the
		// packet alerts' PC.
		var n uint32
		for _, d := range a.Summary.Drops {
			if d.PC == pkt.Packet.PC {
				n += d.Count
			}
		}
		if a.Kind != KindSummary || n < 5 {
			t.Errorf("%s: summary %+v counts %d drops at %#x, want 5", k, a.Summary, n, pkt.Packet.PC)
		}
	}
}

// replyAttrs returns the attributes of a recorded reply.
func replyAttrs(t *testing.T, path string) []byte {
	t.Helper()
	return attrs(t, readHex(t, path))
}

func TestRecordedReplies(t *testing.T) {
	for _, k := range recordedKernels {
		ad, err := netlink.NewAttributeDecoder(replyAttrs(t, filepath.Join(fixtureDir, k, "config_new.hex")))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(ad)
		if want := (Config{Mode: ModePacket, TruncLen: 96, QueueLen: 500}); err != nil || cfg != want {
			t.Errorf("%s: config %+v, %v; want %+v", k, cfg, err, want)
		}
		// Through the client, with the recorded bytes served by a fake.
		fk := newFakeKernel()
		fk.stats = replyAttrs(t, filepath.Join(fixtureDir, k, "stats_new.hex"))
		st, err := testClient(t, fk, nil).Stats()
		if err != nil || !st.HasHW {
			t.Errorf("%s: stats %+v, %v", k, st, err)
		}
	}
}

// TestRecordedEvents reads the recorded alerts through Events, as they
// come from the socket.
func TestRecordedEvents(t *testing.T) {
	var reads []mcasttest.Read
	for _, k := range recordedKernels {
		for _, name := range []string{"packet_udp4_noport_0.hex", "summary.hex"} {
			m := fixtureMessage(t, filepath.Join(fixtureDir, k, name))
			m.Header.Type = netlink.HeaderType(testFamily.ID) // assigned at boot: differs per kernel
			reads = append(reads, mcasttest.Read{Msgs: []netlink.Message{m}})
		}
	}
	e, err := testClient(t, newFakeKernel(), mcasttest.NewConn(reads...)).Listen(ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var a Alert
	var n int
	for {
		err := e.Read(&a)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(reads) || e.DecodeErrors() != 0 {
		t.Errorf("read %d alerts of %d, %d decode errors (%v)", n, len(reads), e.DecodeErrors(), e.LastDecodeError())
	}
}

func TestRecordedFixturesPresent(t *testing.T) {
	for _, k := range recordedKernels {
		if _, err := os.Stat(filepath.Join(fixtureDir, k)); err != nil {
			t.Errorf("recorded fixtures of %s: %v", k, err)
		}
	}
}
