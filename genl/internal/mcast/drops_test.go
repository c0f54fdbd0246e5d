package mcast_test

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/genl/internal/mcast"
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
	errOther := errors.New("not a generic netlink family message")
	cfg := mcast.Config{
		Family: "rtnetlink", FamilyID: 0xffff, Group: "ipv4-ifaddr", GroupID: unix.RTNLGRP_IPV4_IFADDR,
		ReadBuffer: 4096, MessageBuffer: 1 << 16, Unexpected: errOther, Malformed: errOther,
		Dial: func() (mcast.Conn, error) {
			var c *netlink.Conn
			err := ns.Do(func() (err error) {
				c, err = netlink.Dial(unix.NETLINK_ROUTE, nil)
				return err
			})
			return c, err
		},
	}
	r, err := mcast.Listen(cfg, func(*int, genetlink.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	received := 0
	r.Tap = func(netlink.Message) { received++ }

	const sent = 400
	for i := range sent {
		if err := ns.AddAddr("lo", fmt.Sprintf("10.77.%d.%d/32", i/200, i%200+1)); err != nil {
			t.Fatal(err)
		}
	}
	// Every notification is queued or dropped by now: read what is queued.
	for {
		if err := r.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var v int
		if err := r.Read(&v); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
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
