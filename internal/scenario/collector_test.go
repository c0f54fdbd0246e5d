package scenario

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/fate"
)

func event(netns uint32, dport uint16) *fate.Event {
	return &fate.Event{Source: "ebpf", Fate: fate.FateDrop, Reason: "NO_SOCKET", Location: "__udp4_lib_rcv+0x4bc", Netns: netns, Ifname: "s0",
		Packet: fate.Packet{Proto: "udp", Dst: netip.MustParseAddr("192.0.2.2"), Dport: dport}}
}

// Tracing several namespaces, the collector keeps the traced ones, names
// them as the scenario does, and sets aside (to note) packets of no
// known namespace; other namespaces' packets are not the scenario's.
func TestCollectorSeveral(t *testing.T) {
	c := &collector{names: map[uint32]string{100: "br", 200: "server"}, several: true}
	c.Event(event(100, 9))
	c.Event(event(200, 9))
	c.Event(event(300, 9)) // another namespace: someone else's packet
	c.Event(event(0, 9))   // the source could not tell
	c.Fate(&fate.FateRecord{Event: event(200, 10), Verdict: fate.VerdictSingle,
		Observers: []fate.ObserverReport{{Name: "ebpf", Status: fate.StatusSaw}, {Name: "nf", Status: fate.StatusBlind, Why: "no link type"}}})
	obs := c.snapshot()
	if len(obs) != 3 || obs[0].Netns != "br" || obs[1].Netns != "server" || obs[0].Function != "__udp4_lib_rcv" || obs[0].Iface != "s0" {
		t.Fatalf("kept %+v", obs)
	}
	if o := obs[2]; o.Blind["nf"] != "no link type" || len(o.Observers) != 1 || o.Observers[0] != "ebpf" {
		t.Errorf("fate record %+v", o)
	}
	s := &Scenario{Expect: []Expectation{{Name: "closed", Match: Match{Dport: 9}}, {Name: "other", Match: Match{Dport: 7}}}}
	notes := c.nowhereNotes(s)
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "closed: left out 1 packets it selects whose namespace the sources could not name") ||
		!strings.HasPrefix(notes[1], "closed: left out 1 packets it selects met in namespaces not traced") || !strings.Contains(notes[1], "in netns inode 300") {
		t.Errorf("notes %q", notes)
	}
}

// Tracing one namespace, the sources filter in the kernel: the collector
// names what it gets and shows a namespace it does not know by inode.
func TestCollectorOne(t *testing.T) {
	c := &collector{names: map[uint32]string{200: "server"}}
	c.Event(event(200, 9))
	c.Event(event(300, 9))
	c.Event(event(0, 9))
	obs := c.snapshot()
	if len(obs) != 3 || obs[0].Netns != "server" || obs[1].Netns != "inode 300" || obs[2].Netns != "" {
		t.Errorf("observed %+v", obs)
	}
	if len(c.nowhereNotes(&Scenario{Expect: []Expectation{{Name: "x", Match: Match{Dport: 9}}}})) != 0 {
		t.Error("nothing is left out tracing one namespace")
	}
}
