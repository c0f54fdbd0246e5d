package kmod

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/internal/netns"
)

// The nfnetlink_queue protocol, as much of it as the tests use
// (include/uapi/linux/netfilter/nfnetlink_queue.h): bind a queue, read the
// ids of the packets it holds, give verdicts.
const (
	nfnlSubsysQueue    = 3
	nfqnlMsgPacket     = 0
	nfqnlMsgVerdict    = 1
	nfqnlMsgConfig     = 2
	nfqnlMsgVerdictAll = 3 // NFQNL_MSG_VERDICT_BATCH: every id up to the one given
	nfqaPacketHdr      = 1
	nfqaVerdictHdr     = 2
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxlen = 3
	nfqnlCfgCmdBind    = 1
	nfqnlCopyMeta      = 1
	nfDrop             = 0
	nfAccept           = 1
)

// nfqueue is a reader of one NFQUEUE queue inside a namespace.
type nfqueue struct {
	conn *netlink.Conn
	num  uint16
	mu   sync.Mutex
	ids  []uint32
	done chan error
}

// openNFQueue binds queue num in ns and collects the ids of the packets it
// is given until the test ends; closing the socket at cleanup drops what
// it still holds.
func openNFQueue(t *testing.T, ns *netns.NS, num uint16) *nfqueue {
	t.Helper()
	q := &nfqueue{num: num, done: make(chan error, 1)}
	if err := ns.Do(func() error {
		var err error
		q.conn, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		return err
	}); err != nil {
		t.Fatalf("opening an nfnetlink socket: %v", err)
	}
	if err := q.conn.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	cmd := []byte{nfqnlCfgCmdBind, 0, 0, 0}
	params := binary.BigEndian.AppendUint32(nil, 0xffff)
	params = append(params, nfqnlCopyMeta)
	maxlen := binary.BigEndian.AppendUint32(nil, 4096)
	if err := q.send(nfqnlMsgConfig, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Bytes(nfqaCfgCmd, cmd)
		ae.Bytes(nfqaCfgParams, params)
		ae.Bytes(nfqaCfgQueueMaxlen, maxlen)
	}); err != nil {
		q.conn.Close()
		t.Fatalf("binding NFQUEUE %d: %v", num, err)
	}
	go q.read()
	t.Cleanup(func() {
		q.conn.Close()
		<-q.done
	})
	return q
}

// send sends one nfnetlink_queue message for this queue.
func (q *nfqueue) send(msg uint16, flags netlink.HeaderFlags, encode func(*netlink.AttributeEncoder)) error {
	ae := netlink.NewAttributeEncoder()
	encode(ae)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	// struct nfgenmsg: family, version (NFNETLINK_V0), res_id (the queue).
	data := append([]byte{unix.AF_UNSPEC, 0}, binary.BigEndian.AppendUint16(nil, q.num)...)
	m := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | msg), Flags: netlink.Request | flags},
		Data:   append(data, attrs...),
	}
	if flags&netlink.Acknowledge != 0 {
		_, err = q.conn.Execute(m)
		return err
	}
	_, err = q.conn.Send(m)
	return err
}

func (q *nfqueue) read() {
	for {
		msgs, err := q.conn.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				q.done <- fmt.Errorf("NFQUEUE reader overrun")
				return
			}
			q.done <- nil
			return
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysQueue<<8|nfqnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				continue
			}
			for ad.Next() {
				if ad.Type() == nfqaPacketHdr {
					if b := ad.Bytes(); len(b) >= 4 {
						q.mu.Lock()
						q.ids = append(q.ids, binary.BigEndian.Uint32(b))
						q.mu.Unlock()
					}
				}
			}
		}
	}
}

// held waits up to d for at least n packets and returns the ids so far.
func (q *nfqueue) held(n int, d time.Duration) []uint32 {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		q.mu.Lock()
		ids := append([]uint32(nil), q.ids...)
		q.mu.Unlock()
		if len(ids) >= n || time.Now().After(end) {
			return ids
		}
	}
}

// verdict gives verdict (nfDrop, nfAccept) to packet id, or with all to
// every held packet up to id.
func (q *nfqueue) verdict(id uint32, verdict uint32, all bool) error {
	msg := uint16(nfqnlMsgVerdict)
	if all {
		msg = nfqnlMsgVerdictAll
	}
	hdr := binary.BigEndian.AppendUint32(nil, verdict)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	return q.send(msg, 0, func(ae *netlink.AttributeEncoder) { ae.Bytes(nfqaVerdictHdr, hdr) })
}
