package mcast_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// TestSocketDropsCountsEveryMessage: a burst of multicast messages into a
// socket with a small receive buffer loses most of them; ENOBUFS is
// reported once per burst, the socket's drop count names every lost
// message: received + dropped = sent. The messages are rtnetlink's
// address notifications in a namespace of the test's own (one per address
// added), which the kernel queues before the add returns.
func TestSocketDropsCountsEveryMessage(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	r := addrReader(t, ns, 4096, 1<<16)
	received := 0
	r.Tap = func(netlink.Message) { received++ }

	const sent = 400
	addAddrs(t, ns, sent)
	readQueued(t, r)
	drops, err := r.SocketDrops()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sent: %d received, %d dropped at the socket, %d ENOBUFS reports", sent, received, drops, r.Overruns())
	if drops == 0 || received+int(drops) != sent {
		t.Errorf("received %d + dropped %d, want %d sent, some of them dropped", received, drops, sent)
	}
	if r.Overruns() == 0 || r.Overruns() >= drops {
		t.Errorf("%d ENOBUFS reports for %d drops: want at least one, and fewer than the drops", r.Overruns(), drops)
	}
}

// TestCutMessagesCounted: messages longer than the message buffer are cut
// by the kernel (MSG_TRUNC) and counted as decode errors, none handed on;
// a burst longer than one recvmmsg batch is read whole.
func TestCutMessagesCounted(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	r := addrReader(t, ns, 1<<20, 32) // an address notification is ~80 bytes
	defer r.Close()
	tapped := 0
	r.Tap = func(netlink.Message) { tapped++ }
	const sent = 100
	addAddrs(t, ns, sent)
	readQueued(t, r)
	if drops, err := r.SocketDrops(); err != nil || drops != 0 {
		t.Fatalf("socket drops %d (%v): the buffer was to hold every notification", drops, err)
	}
	if r.DecodeErrors() != sent || tapped != 0 {
		t.Errorf("%d decode errors and %d messages handed on, want %d and 0", r.DecodeErrors(), tapped, sent)
	}
	if err := r.LastDecodeError(); err == nil || !strings.Contains(err.Error(), "32-byte buffer") {
		t.Errorf("last decode error %v, want one naming the 32-byte buffer", err)
	}
}

// addrReader reads rtnetlink's IPv4 address notifications in ns: a
// multicast group the test can fill by adding addresses.
func addrReader(t *testing.T, ns *netns.NS, readBuf, msgBuf int) *mcast.Reader[*int] {
	t.Helper()
	errOther := errors.New("not a generic netlink family message")
	cfg := mcast.Config{
		Family: "rtnetlink", FamilyID: 0xffff, Group: "ipv4-ifaddr", GroupID: unix.RTNLGRP_IPV4_IFADDR,
		ReadBuffer: readBuf, MessageBuffer: msgBuf, Unexpected: errOther, Malformed: errOther,
		Dial: func() (mcast.Conn, error) {
			var c *netlink.Conn
			err := ns.Do(func() (err error) {
				c, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{MessageBufferSize: msgBuf})
				return err
			})
			return c, err
		},
	}
	r, err := mcast.Listen(cfg, func(*int, genetlink.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// addAddrs adds n addresses to lo in ns: n notifications, queued (or
// dropped) before each add returns.
func addAddrs(t *testing.T, ns *netns.NS, n int) {
	t.Helper()
	for i := range n {
		if err := ns.AddAddr("lo", fmt.Sprintf("10.77.%d.%d/32", i/200, i%200+1)); err != nil {
			t.Fatal(err)
		}
	}
}

// readQueued reads until nothing came for 200 ms.
func readQueued(t *testing.T, r *mcast.Reader[*int]) {
	t.Helper()
	for {
		if err := r.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var v int
		if err := r.Read(&v); errors.Is(err, os.ErrDeadlineExceeded) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}
