package tracer

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/pktfate/pktfate/internal/netns"
	"golang.org/x/sys/unix"
)

// BPF netfilter links are hooks of their own: a namespace with none
// registered runs no netfilter code at all (a static key skips
// nf_hook_slow), and pktfate's two links per hook would switch the whole
// hook path on for every packet, to bracket chains that are not there
// (on delivered UDP, two thirds of what tracing costs the sender). So the
// links go only where an IPv4 or IPv6 chain is: an nftables base chain
// (iptables-nft's among them) or a legacy iptables table. Conntrack, NAT
// and defragmentation register their hooks for such rules. A hook that no
// chain shows (conntrack for tc's ct action or openvswitch, another
// tool's BPF program) is found by its first drop: a NETFILTER_DROP that
// no link bracketed in a namespace without links attaches them there at
// once, and that drop's nf is reported blind, with why.

// Netlink constants of nftables (include/uapi/linux/netfilter/nf_tables.h).
const (
	nfnlSubsysNFTables = 10
	nftMsgGetChain     = 4
	nftaChainHook      = 4
	nfprotoInet        = 1
	nfprotoIPv4        = 2
	nfprotoIPv6        = 10
)

// nfChainsHere reports whether the calling thread's network namespace has
// a netfilter chain the links could bracket (IPv4, IPv6 or inet): a legacy
// iptables table, or with nft an nftables base chain. When it cannot tell,
// it says yes: attaching where nothing runs costs speed, not answers.
func nfChainsHere(nft bool) bool {
	if n, err := legacyTables(); err != nil || n > 0 {
		return true
	}
	if !nft {
		return false
	}
	has, err := nftBaseChains()
	return err != nil || has
}

// legacyTables counts the legacy iptables and ip6tables tables of the
// calling thread's namespace (each registers its hooks when made).
func legacyTables() (int, error) {
	n := 0
	for _, f := range []string{"/proc/thread-self/net/ip_tables_names", "/proc/thread-self/net/ip6_tables_names"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // no legacy iptables in this kernel
		}
		if err != nil {
			return 0, err
		}
		n += len(strings.Fields(string(b)))
	}
	return n, nil
}

// nftBaseChains reports whether nftables has a base chain (one with a
// hook) of the ip, ip6 or inet family in the calling thread's namespace.
func nftBaseChains() (bool, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return false, err
	}
	defer c.Close()
	var msgs []netlink.Message
	for try := 0; ; try++ {
		msgs, err = c.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(nfnlSubsysNFTables<<8 | nftMsgGetChain),
				Flags: netlink.Request | netlink.Dump,
			},
			Data: []byte{unix.AF_UNSPEC, 0, 0, 0}, // struct nfgenmsg: every family
		})
		// EINTR: the ruleset changed during the dump; ask again.
		if !errors.Is(err, unix.EINTR) || try == 2 {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) {
			return false, nil // no nf_tables: no chains of it
		}
		return false, err
	}
	for _, m := range msgs {
		if chainHooksInet(m.Data) {
			return true, nil
		}
	}
	return false, nil
}

// chainHooksInet reports whether one NFT_MSG_NEWCHAIN message (nfgenmsg
// and attributes) is a base chain of the ip, ip6 or inet family.
func chainHooksInet(data []byte) bool {
	if len(data) < 4 {
		return false
	}
	switch data[0] {
	case nfprotoInet, nfprotoIPv4, nfprotoIPv6:
	default:
		return false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == nftaChainHook {
			return true
		}
	}
	return false
}

// nftables' change notifications (NFNLGRP_NFTABLES) and the message that
// announces a new chain.
const (
	nfnlgrpNFTables = 7
	nftMsgNewChain  = 3
)

// nftWatch subscribes to nftables' change notifications in the namespace
// at path and calls onChain, from a goroutine of its own, whenever a base
// chain the links could bracket is made there (or notifications were
// lost: then one may have been). A chain made during a capture is thus
// bracketed within milliseconds, not at the next look a second later;
// legacy iptables sends no notifications, and waits for the look. Closing
// the returned closer ends the goroutine, which wg waits for.
func nftWatch(path string, wg *sync.WaitGroup, onChain func()) (io.Closer, error) {
	var c *netlink.Conn
	err := netns.DoPath(path, func() error {
		var err error
		c, err = netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{Groups: 1 << (nfnlgrpNFTables - 1)})
		return err
	})
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msgs, err := c.Receive()
			if errors.Is(err, unix.ENOBUFS) {
				onChain() // notifications lost: look
				continue
			}
			if err != nil {
				return // closed
			}
			for _, m := range msgs {
				if m.Header.Type == netlink.HeaderType(nfnlSubsysNFTables<<8|nftMsgNewChain) && chainHooksInet(m.Data) {
					onChain()
				}
			}
		}
	}()
	return c, nil
}
