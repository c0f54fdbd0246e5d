package kmod

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

// fakeSession is a session of fakeModule.
type fakeSession struct {
	enabled bool
	filter  []byte
	rate    []byte
}

// fakeModule models pktfate.ko's commands: sessions by id, EPERM without
// privileges, ENOENT for an unknown session, EINVAL (as the strict policy)
// for an unknown family bit.
type fakeModule struct {
	mu           sync.Mutex
	unprivileged bool
	sessions     map[uint32]*fakeSession
	next         uint32
	stats        []byte // raw GET_STATS attributes (a fixture), when set
	drop         string // attribute left out of GET_STATS replies
	calls        []string
}

// open is the Client's openSession: SESSION_NEW on a socket of events.
func (k *fakeModule) open(events *mcasttest.Conn) func() (mcast.Conn, uint32, error) {
	return func() (mcast.Conn, uint32, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.calls = append(k.calls, "SESSION_NEW")
		if k.unprivileged {
			return nil, 0, unix.EPERM
		}
		if len(k.sessions) == SessionsMax {
			return nil, 0, unix.ENOSPC
		}
		if k.sessions == nil {
			k.sessions = map[uint32]*fakeSession{}
		}
		k.next += 100
		k.sessions[k.next] = &fakeSession{}
		return events, k.next, nil
	}
}

func (k *fakeModule) session(data []byte) (*fakeSession, uint32, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return nil, 0, err
	}
	var id uint32
	for ad.Next() {
		if ad.Type() == attrSession {
			id = ad.Uint32()
		}
	}
	s := k.sessions[id]
	if s == nil {
		return nil, id, genltest.Error(int(unix.ENOENT))
	}
	return s, id, nil
}

// moduleStats encodes the module part of a GET_STATS reply.
func encodeModuleStats(ae *netlink.AttributeEncoder, sessions int) {
	ae.Uint32(attrQueueLen, 256)
	ae.Uint32(attrSessions, uint32(sessions))
	ae.Uint32(attrSessionsMax, SessionsMax)
	ae.Uint32(attrTableSize, 2048)
	ae.Uint32(attrTableUsed, 3)
	ae.Uint32(attrStaleMs, 1000)
	ae.Uint32(attrFamiliesCovered, uint32(FamilyMask))
	ae.Uint32(attrNetdevHooksCovered, 3)
	ae.Uint32(attrTailChains, 1)
	ae.Uint32(attrHookFailures, 0)
	ae.Nested(attrModuleStats, func(nae *netlink.AttributeEncoder) error {
		for i, a := range moduleCounters {
			nae.Uint64(a, uint64(10+i))
		}
		return nil
	})
	ae.Nested(attrMemory, func(nae *netlink.AttributeEncoder) error {
		for k := 1; k < memKinds; k++ {
			nae.Nested(uint16(k), func(kae *netlink.AttributeEncoder) error {
				kae.Uint64(attrMemAllocBytes, uint64(1000*k))
				kae.Uint64(attrMemFreedBytes, uint64(900*k))
				kae.Uint64(attrMemAllocObjects, uint64(2*k))
				kae.Uint64(attrMemFreedObjects, uint64(k))
				return nil
			})
		}
		return nil
	})
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
	case cmdEnable, cmdDisable:
		s, _, err := k.session(greq.Data)
		if err != nil {
			return nil, err
		}
		s.enabled = cmd == cmdEnable
		s.rate = greq.Data
		return nil, io.EOF
	case cmdSetFilter:
		s, _, err := k.session(greq.Data)
		if err != nil {
			return nil, err
		}
		ad, err := netlink.NewAttributeDecoder(greq.Data)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() == attrFilterFamilies && ad.Uint32()&^uint32(FamilyMask) != 0 {
				return nil, genltest.Error(int(unix.EINVAL))
			}
		}
		s.filter = greq.Data
		return nil, io.EOF
	case cmdGetStats:
		data := k.stats
		if data == nil {
			ae := netlink.NewAttributeEncoder()
			encodeModuleStats(ae, len(k.sessions))
			if len(greq.Data) > 0 {
				s, id, err := k.session(greq.Data)
				if err != nil {
					return nil, err
				}
				ae.Uint32(attrSession, id)
				ae.Uint8(attrEnabled, map[bool]uint8{true: 1}[s.enabled])
				for _, a := range []uint16{attrRate, attrBurst, attrFilterNetns, attrFilterMark, attrFilterMarkMask, attrFilterFamilies} {
					ae.Uint32(a, 0)
				}
				for _, a := range sessionAttrs[8:] {
					if attrNames[a] != k.drop {
						ae.Uint64(a, 1)
					}
				}
				ae.Uint64(attrStatSeen, 3)
				ae.Uint64(attrStatReported, 2)
			}
			var err error
			if data, err = ae.Encode(); err != nil {
				return nil, err
			}
		}
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdGetStats, Version: familyVersion}, Data: data}}, nil
	}
	return nil, genltest.Error(int(unix.EOPNOTSUPP))
}

func testClient(t *testing.T, k *fakeModule) (*Client, *mcasttest.Conn) {
	t.Helper()
	c, err := initClient(genltest.Dial(genltest.ServeFamily(testFamily, k.serve)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ev := mcasttest.NewConn()
	c.openSession = k.open(ev)
	return c, ev
}

// TestSessionCommands: a session is created on its own socket, and every
// command names it.
func TestSessionCommands(t *testing.T) {
	k := &fakeModule{}
	c, ev := testClient(t, k)
	s, err := c.NewSession(SessionConfig{Filter: Filter{Netns: 4026531840, Mark: 1, MarkMask: 1, Families: FamilyIPv4 | FamilyBridge}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ID() != 100 {
		t.Errorf("session id %d, want 100", s.ID())
	}
	if got := ev.Joined(); len(got) != 0 {
		t.Errorf("joined groups %v: a session's events are unicast", got)
	}
	if err := s.Enable(EnableConfig{Rate: 100, Burst: 10}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Session != 100 || st.Seen != 3 || st.Reported != 2 || st.Lost() != 4 || st.Unattributed() != 2 ||
		st.Module.Sessions != 1 || st.Module.Stale != time.Second || st.Module.Families != FamilyMask || st.Module.TailChains != 1 {
		t.Errorf("stats %+v", st)
	}
	if m := st.Module.Memory[MemRing]; m.AllocBytes != 3000 || m.FreedObjects != 3 {
		t.Errorf("ring memory %+v", m)
	}
	if b, o := st.Module.Memory[MemSession].InUse(); b != 400 || o != 4 {
		t.Errorf("session memory in use %d bytes, %d objects", b, o)
	}
	if err := s.Disable(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(k.calls, " "); got != "SESSION_NEW SET_FILTER ENABLE GET_STATS DISABLE" {
		t.Errorf("calls %s", got)
	}
	ad, _ := netlink.NewAttributeDecoder(k.sessions[100].filter)
	n := 0
	for ad.Next() {
		n++
	}
	if n != 5 {
		t.Errorf("SET_FILTER carried %d attributes, want 5 (session, netns, mark, mask, families)", n)
	}
	if err := s.SetFilter(Filter{Families: 1 << 5}); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "SET_FILTER") {
		t.Errorf("bad family: %v", err)
	}
	ms, err := c.ModuleStats()
	if err != nil || ms.Sessions != 1 || ms.Rebracketed != 16 {
		t.Errorf("module stats %+v, %v", ms, err)
	}
}

// TestSessionsAreSeparate: two sessions have their own ids and switches.
func TestSessionsAreSeparate(t *testing.T) {
	k := &fakeModule{}
	c, _ := testClient(t, k)
	a, err := c.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ev2 := mcasttest.NewConn()
	c.openSession = k.open(ev2)
	b, err := c.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() {
		t.Fatalf("both sessions have id %d", a.ID())
	}
	if err := a.Enable(EnableConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Disable(); err != nil {
		t.Fatal(err)
	}
	if !k.sessions[a.ID()].enabled || k.sessions[b.ID()].enabled {
		t.Errorf("a enabled %v, b enabled %v", k.sessions[a.ID()].enabled, k.sessions[b.ID()].enabled)
	}
	b.Close()
	if !ev2.Closed() {
		t.Error("Close left the session's socket open")
	}
}

// TestStatsMissingValue: a reply without a counter is an error naming it,
// never a zero.
func TestStatsMissingValue(t *testing.T) {
	for _, name := range []string{"STAT_QUEUE_FULL", "STAT_STALE_DROPPED", "STAT_STOLEN"} {
		k := &fakeModule{drop: name}
		c, _ := testClient(t, k)
		s, err := c.NewSession(SessionConfig{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Stats()
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), name) {
			t.Errorf("without %s: %+v, %v", name, st, err)
		}
	}
	// And the module's part: drop the memory nest.
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(attrQueueLen, 256)
	b, _ := ae.Encode()
	if _, err := parseStats(b, false); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "SESSIONS") {
		t.Errorf("module stats without most values: %v", err)
	}
}

func TestSessionErrors(t *testing.T) {
	c, _ := testClient(t, &fakeModule{unprivileged: true})
	if _, err := c.NewSession(SessionConfig{}); !errors.Is(err, unix.EPERM) {
		t.Errorf("unprivileged NewSession: %v", err)
	}
	k := &fakeModule{}
	c, _ = testClient(t, k)
	for range SessionsMax {
		c.openSession = k.open(mcasttest.NewConn())
		if _, err := c.NewSession(SessionConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.NewSession(SessionConfig{}); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("session %d: %v, want ENOSPC", SessionsMax+1, err)
	}
}

func TestClientUnprivileged(t *testing.T) {
	k := &fakeModule{}
	c, _ := testClient(t, k)
	s, err := c.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	k.unprivileged = true
	for name, err := range map[string]error{"enable": s.Enable(EnableConfig{}), "disable": s.Disable(), "filter": s.SetFilter(Filter{})} {
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			t.Errorf("%s: %v, want os.ErrPermission naming CAP_NET_ADMIN", name, err)
		}
	}
}

// TestParseSessionReply: the SESSION_NEW reply must carry the session.
func TestParseSessionReply(t *testing.T) {
	reply := func(cmd uint8, id uint32) []netlink.Message {
		ae := netlink.NewAttributeEncoder()
		if id != 0 {
			ae.Uint32(attrSession, id)
		}
		data, _ := ae.Encode()
		b, _ := (&genetlink.Message{Header: genetlink.Header{Command: cmd, Version: familyVersion}, Data: data}).MarshalBinary()
		return []netlink.Message{{Data: b}}
	}
	if id, err := parseSessionReply(reply(cmdSessionNew, 4242)); err != nil || id != 4242 {
		t.Errorf("reply: %d, %v", id, err)
	}
	for name, msgs := range map[string][]netlink.Message{
		"no id": reply(cmdSessionNew, 0), "other command": reply(cmdGetStats, 7), "none": nil,
	} {
		if _, err := parseSessionReply(msgs); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
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

// TestClientWrongVersion: a version 1 module (global state) is refused.
func TestClientWrongVersion(t *testing.T) {
	f := testFamily
	f.Version = 1
	if _, err := initClient(genltest.Dial(genltest.ServeFamily(f, (&fakeModule{}).serve))); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("family version 1: %v", err)
	}
}

// TestRecordedStats decodes the GET_STATS replies recorded on each kernel
// line: a fresh module's, then a session's.
func TestRecordedStats(t *testing.T) {
	for _, line := range recordedKernels {
		b := testutil.ReadHex(t, filepath.Join(fixtureDir, line, "stats.hex"))
		st, err := parseStats(b[nlmsgHeaderLen+4:], false)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		m := st.Module
		if m.QueueLen != 256 || m.Sessions != 0 || m.SessionsMax != SessionsMax || m.TableSize != 2048 || m.Stale != time.Second ||
			m.Families != FamilyMask || m.NetdevHooks != 3 || m.Memory[MemTable].AllocObjects != 1 {
			t.Errorf("%s: fresh module's stats %+v", line, m)
		}
		b = testutil.ReadHex(t, filepath.Join(fixtureDir, line, "session_stats.hex"))
		st, err = parseStats(b[nlmsgHeaderLen+4:], true)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if st.Session == 0 || st.Enabled || st.Rate != 10000 || st.Burst != 1000 || st.Filter != (Filter{}) || st.Module.Sessions != 1 {
			t.Errorf("%s: fresh session's stats %+v", line, st)
		}
	}
}

// recordedDrop is a DROP event recorded on the kernel matrix.
var recordedDrops = []struct {
	file, hook string
	family     uint8
	proto      uint16
	where      Where
}{
	{"drop_udp4_local_in.hex", "LOCAL_IN", NFProtoIPv4, 0x0800, WhereChain},
	{"drop_udp4_forward.hex", "FORWARD", NFProtoIPv4, 0x0800, WhereChain},
	{"drop_udp4_local_out.hex", "LOCAL_OUT", NFProtoIPv4, 0x0800, WhereChain},
	{"drop_udp6_local_in.hex", "LOCAL_IN", NFProtoIPv6, 0x86dd, WhereChain},
	{"drop_udp6_forward.hex", "FORWARD", NFProtoIPv6, 0x86dd, WhereChain},
	{"drop_udp6_local_out.hex", "LOCAL_OUT", NFProtoIPv6, 0x86dd, WhereChain},
	{"drop_bridge_forward.hex", "FORWARD", NFProtoBridge, 0x0800, WhereChain},
	{"drop_netdev_ingress.hex", "INGRESS", NFProtoNetdev, 0x0800, WhereChain},
	{"drop_tail_local_in.hex", "LOCAL_IN", NFProtoIPv4, 0x0800, WhereTail},
}

// TestRecordedDrops decodes the DROP events recorded from each kernel line:
// UDP dropped by nftables in the test router's inet hooks, a bridge's
// forward chain, a device's ingress chain, and an INT_MAX chain loaded
// before the module (see the kernel tests that record them).
func TestRecordedDrops(t *testing.T) {
	for _, line := range recordedKernels {
		for _, r := range recordedDrops {
			name := filepath.Join(line, r.file)
			var d Drop
			if err := ParseMessage(testutil.ReadHex(t, filepath.Join(fixtureDir, name)), &d); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			dst, ok := udpDst(d.Payload)
			if HookName(d.Family, d.Hook) != r.hook || d.Family != r.family || d.Where != r.where || d.Protocol != r.proto ||
				d.Skb == 0 || d.Mono == 0 || d.Location == 0 || d.Netns == 0 || !ok || dst.Port() < 30000 || int(d.Len) < len(d.Payload) {
				t.Errorf("%s: %+v (to %s)", name, d, dst)
			}
		}
	}
}

// TestEventsRead: recorded events decode through a Session, an ENOBUFS is
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
	k := &fakeModule{}
	c, _ := testClient(t, k)
	c.openSession = k.open(fe)
	s, err := c.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var d Drop
	for i := range 2 {
		if err := s.Read(&d); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if HookName(d.Family, d.Hook) != "LOCAL_IN" || d.Family != NFProtoIPv4 || d.Where != WhereChain {
			t.Errorf("read %d: %+v", i, d)
		}
	}
	if err := s.Read(&d); !errors.Is(err, ErrClosed) {
		t.Errorf("read after the last message: %v, want ErrClosed", err)
	}
	if s.Overruns() != 1 || s.DecodeErrors() != 1 || !errors.Is(s.LastDecodeError(), ErrUnexpected) {
		t.Errorf("overruns %d, decode errors %d (%v)", s.Overruns(), s.DecodeErrors(), s.LastDecodeError())
	}
}

func TestHookNames(t *testing.T) {
	for _, c := range []struct {
		family, hook uint8
		want         string
	}{
		{NFProtoIPv4, 1, "LOCAL_IN"}, {NFProtoIPv6, 4, "POST_ROUTING"}, {NFProtoARP, 0, "IN"}, {NFProtoARP, 1, "OUT"},
		{NFProtoARP, 2, "FORWARD"}, {NFProtoBridge, 2, "FORWARD"}, {NFProtoBridge, 5, "BROUTING"},
		{NFProtoNetdev, NetdevIngress, "INGRESS"}, {NFProtoNetdev, NetdevEgress, "EGRESS"}, {NFProtoARP, 3, "HOOK_3"},
		{NFProtoInet, 5, "INGRESS"},
	} {
		if got := HookName(c.family, c.hook); got != c.want {
			t.Errorf("HookName(%s, %d) = %s, want %s", FamilyName(c.family), c.hook, got, c.want)
		}
	}
}
