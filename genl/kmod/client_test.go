package kmod

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
	"github.com/pktfate/pktfate/genl/internal/mcast/mcasttest"
	"github.com/pktfate/pktfate/internal/testutil"
)

// fixtureDir holds messages recorded from pktfate.ko on the kernel matrix
// (see its README).
const fixtureDir = "../../testdata/kmod"

var recordedKernels = []string{"6.1", "6.12", "7.2"}

// testFamily is the family as the fakes register it (the ID is dynamic).
var testFamily = genetlink.Family{
	ID: 0x22, Name: familyName, Version: familyVersion,
	Groups: []genetlink.MulticastGroup{{ID: 9, Name: eventsGroup}},
}

// fakeModule models pktfate.ko's commands: EPERM without privileges,
// EINVAL (with the strict policy) for an unknown family bit.
type fakeModule struct {
	mu           sync.Mutex
	unprivileged bool
	enabled      bool
	filter       []byte
	stats        []byte // raw GET_STATS attributes (a fixture), when set
	calls        []string
}

func (k *fakeModule) serve(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cmd := greq.Header.Command
	if cmd == cmdUnspec {
		return nil, io.EOF
	}
	k.calls = append(k.calls, cmdNames[cmd])
	if k.unprivileged {
		return nil, genltest.Error(int(unix.EPERM))
	}
	switch cmd {
	case cmdEnable:
		k.enabled = true
		return nil, io.EOF
	case cmdDisable:
		k.enabled = false
		return nil, io.EOF
	case cmdSetFilter:
		ad, err := netlink.NewAttributeDecoder(greq.Data)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() == attrFilterFamilies && ad.Uint32()&^uint32(FamilyIPv4|FamilyIPv6) != 0 {
				return nil, genltest.Error(int(unix.EINVAL))
			}
		}
		k.filter = greq.Data
		return nil, io.EOF
	case cmdGetStats:
		data := k.stats
		if data == nil {
			ae := netlink.NewAttributeEncoder()
			ae.Uint8(attrEnabled, map[bool]uint8{true: 1}[k.enabled])
			ae.Uint64(attrStatSeen, 3)
			ae.Uint64(attrStatReported, 2)
			ae.Uint64(attrStatQueueFull, 1)
			var err error
			if data, err = ae.Encode(); err != nil {
				return nil, err
			}
		}
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdGetStats, Version: familyVersion}, Data: data}}, nil
	}
	return nil, genltest.Error(int(unix.EOPNOTSUPP))
}

func testClient(t *testing.T, k *fakeModule) *Client {
	t.Helper()
	c, err := initClient(genltest.Dial(genltest.ServeFamily(testFamily, k.serve)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientCommands(t *testing.T) {
	k := &fakeModule{}
	c := testClient(t, k)
	if err := c.SetFilter(Filter{Netns: 4026531840, Mark: 1, MarkMask: 1, Families: FamilyIPv4}); err != nil {
		t.Fatal(err)
	}
	if err := c.Enable(EnableConfig{Rate: 100, Burst: 10}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Seen != 3 || st.Reported != 2 || st.Lost() != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := c.Disable(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(k.calls, " "); got != "SET_FILTER ENABLE GET_STATS DISABLE" {
		t.Errorf("calls %s", got)
	}
	ad, _ := netlink.NewAttributeDecoder(k.filter)
	n := 0
	for ad.Next() {
		n++
	}
	if n != 4 {
		t.Errorf("SET_FILTER carried %d attributes, want 4", n)
	}
	if err := c.SetFilter(Filter{Families: 4}); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "SET_FILTER") {
		t.Errorf("bad family: %v", err)
	}
}

func TestClientUnprivileged(t *testing.T) {
	c := testClient(t, &fakeModule{unprivileged: true})
	for name, err := range map[string]error{"enable": c.Enable(EnableConfig{}), "disable": c.Disable(), "filter": c.SetFilter(Filter{})} {
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			t.Errorf("%s: %v, want os.ErrPermission naming CAP_NET_ADMIN", name, err)
		}
	}
}

// TestClientNoModule: the family missing (module not loaded) is
// os.ErrNotExist with the way to build and load it.
func TestClientNoModule(t *testing.T) {
	conn := genltest.Dial(func(greq genetlink.Message, req netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(unix.ENOENT))
	})
	_, err := initClient(conn)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "make kmod KDIR=") || !strings.Contains(err.Error(), "insmod kmod/pktfate.ko") {
		t.Fatalf("initClient without the family: %v", err)
	}
}

func TestClientWrongVersion(t *testing.T) {
	f := testFamily
	f.Version = 2
	if _, err := initClient(genltest.Dial(genltest.ServeFamily(f, (&fakeModule{}).serve))); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("family version 2: %v", err)
	}
}

// TestRecordedStats decodes the GET_STATS replies of fresh modules
// recorded on each kernel line.
func TestRecordedStats(t *testing.T) {
	for _, line := range recordedKernels {
		b := testutil.ReadHex(t, filepath.Join(fixtureDir, line, "stats.hex"))
		k := &fakeModule{stats: b[nlmsgHeaderLen+4:]}
		st, err := testClient(t, k).Stats()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if st.Enabled || st.Rate != 10000 || st.Burst != 1000 || st.QueueLen != 256 || st.Filter != (Filter{}) {
			t.Errorf("%s: fresh module's stats %+v", line, st)
		}
	}
}

// TestRecordedDrops decodes the DROP events recorded from each kernel line:
// UDP dropped by nftables in LOCAL_IN, FORWARD and LOCAL_OUT of the test
// router, IPv4 and IPv6 (see TestKernelHookDrops).
func TestRecordedDrops(t *testing.T) {
	for _, line := range recordedKernels {
		for _, net := range []string{"udp4", "udp6"} {
			for _, hook := range []string{"LOCAL_IN", "FORWARD", "LOCAL_OUT"} {
				name := filepath.Join(line, "drop_"+net+"_"+strings.ToLower(hook)+".hex")
				var d Drop
				if err := ParseMessage(testutil.ReadHex(t, filepath.Join(fixtureDir, name)), &d); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				pf := map[string]uint8{"udp4": NFProtoIPv4, "udp6": NFProtoIPv6}[net]
				proto := map[string]uint16{"udp4": 0x0800, "udp6": 0x86dd}[net]
				dst, ok := udpDst(d.Payload)
				if HookName(d.Hook) != hook || d.Family != pf || d.Protocol != proto || d.Skb == 0 || d.Mono == 0 ||
					d.Reason == 0 || d.Location == 0 || d.Netns == 0 || !ok || dst.Port() < 30000 || int(d.Len) < len(d.Payload) {
					t.Errorf("%s: %+v (to %s)", name, d, dst)
				}
			}
		}
	}
}

// TestEventsRead: recorded events decode through Events, an ENOBUFS is
// counted and reading goes on, a foreign message is counted and skipped.
func TestEventsRead(t *testing.T) {
	raw := testutil.ReadHex(t, filepath.Join(fixtureDir, "6.12", "drop_udp4_local_in.hex"))
	var m netlink.Message
	if err := m.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	m.Header.Type = netlink.HeaderType(testFamily.ID)
	foreign := m
	foreign.Header.Type = 0x99
	fe := mcasttest.NewConn(mcasttest.Read{Msgs: []netlink.Message{foreign, m}}, mcasttest.Read{Err: unix.ENOBUFS}, mcasttest.Read{Msgs: []netlink.Message{m}})
	c := testClient(t, &fakeModule{})
	c.dialEvents = func() (mcast.Conn, error) { return fe, nil }
	ev, err := c.Listen(ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if got := fe.Joined(); len(got) != 1 || got[0] != 9 {
		t.Errorf("joined %v, want the events group 9", got)
	}
	var d Drop
	for i := range 2 {
		if err := ev.Read(&d); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if HookName(d.Hook) != "LOCAL_IN" || d.Family != NFProtoIPv4 {
			t.Errorf("read %d: %+v", i, d)
		}
	}
	if err := ev.Read(&d); !errors.Is(err, ErrClosed) {
		t.Errorf("read after the last message: %v, want ErrClosed", err)
	}
	if ev.Overruns() != 1 || ev.DecodeErrors() != 1 || !errors.Is(ev.LastDecodeError(), ErrUnexpected) {
		t.Errorf("overruns %d, decode errors %d (%v)", ev.Overruns(), ev.DecodeErrors(), ev.LastDecodeError())
	}
}
