package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"
)

// BurstFIFO sends n datagrams of payload from conn to dst on a thread of
// its own under SCHED_FIFO, and returns when they are sent. A kworker that
// drains a per-CPU queue (NET_DM's, the module's) runs on the same CPU and
// cannot preempt it, so such a queue overflows where an ordinary thread
// may let the kworker win after every packet. EPERM (a rule refused the
// packet on output) is not an error.
func BurstFIFO(conn *net.UDPConn, dst netip.AddrPort, n int, payload []byte) error {
	sent := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with its policy
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}, 0); err != nil {
			sent <- fmt.Errorf("SCHED_FIFO for the sender: %w", err)
			return
		}
		for range n {
			if _, err := conn.WriteToUDPAddrPort(payload, dst); err != nil && !errors.Is(err, unix.EPERM) {
				sent <- fmt.Errorf("sending to %s: %w", dst, err)
				return
			}
		}
		sent <- nil
	}()
	return <-sent
}
