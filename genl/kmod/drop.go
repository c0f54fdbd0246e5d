package kmod

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/genetlink"

	"github.com/pktfate/pktfate/genl/internal/nlattr"
)

// Drop is one packet the module saw freed inside a netfilter hook's chain
// (a DROP event).
type Drop struct {
	// Hook is the hook in its family's numbering (NF_INET_*, NF_ARP_*,
	// NF_BR_*, NF_NETDEV_*; HookName), Family its NFPROTO_* family
	// (FamilyName). Inet ingress chains run in the device's ingress list:
	// NFProtoNetdev, NetdevIngress.
	Hook, Family uint8
	// Where says where in the chain the packet was freed.
	Where Where
	// Netns is the inode of the packet's network namespace.
	Netns uint32
	// InIfindex and OutIfindex are the hook's devices (0: none), in Netns.
	InIfindex, OutIfindex uint32
	// Skb is the kernel address of the sk_buff.
	Skb  uint64
	Mark uint32
	// Mono is CLOCK_MONOTONIC in nanoseconds, as bpf_ktime_get_ns.
	Mono uint64
	// Reason is the raw enum skb_drop_reason of the running kernel.
	Reason uint32
	// Location is the kernel address that called kfree_skb.
	Location uint64
	Len      uint32
	// Protocol is skb->protocol in host byte order (0x0800, 0x86dd).
	Protocol uint16
	CPU      uint32
	// Payload is the first bytes from the network header (at most
	// PayloadMax); Read reuses its array.
	Payload []byte
}

// decode fills d from a DROP message, reusing d.Payload.
func (d *Drop) decode(gm genetlink.Message) error {
	if gm.Header.Command != cmdDrop {
		return fmt.Errorf("%w: command %d, want DROP (%d)", ErrUnexpected, gm.Header.Command, cmdDrop)
	}
	ad := nlattr.New(gm.Data)
	*d = Drop{Payload: d.Payload[:0]}
	var have uint64
	for ad.Next() {
		if ad.Type() < 64 {
			have |= 1 << ad.Type()
		}
		switch ad.Type() {
		case attrHook:
			d.Hook = ad.Uint8()
		case attrFamily:
			d.Family = ad.Uint8()
		case attrWhere:
			d.Where = Where(ad.Uint8())
		case attrNetns:
			d.Netns = ad.Uint32()
		case attrInIfindex:
			d.InIfindex = ad.Uint32()
		case attrOutIfindex:
			d.OutIfindex = ad.Uint32()
		case attrSkb:
			d.Skb = ad.Uint64()
		case attrMark:
			d.Mark = ad.Uint32()
		case attrTimestamp:
			d.Mono = ad.Uint64()
		case attrReason:
			d.Reason = ad.Uint32()
		case attrLocation:
			d.Location = ad.Uint64()
		case attrLen:
			d.Len = ad.Uint32()
		case attrProtocol:
			d.Protocol = ad.Uint16()
		case attrCPU:
			d.CPU = ad.Uint32()
		case attrPayload:
			if b := ad.Value(); len(b) > PayloadMax {
				return fmt.Errorf("%w: payload of %d bytes, at most %d", ErrMalformed, len(b), PayloadMax)
			}
			d.Payload = append(d.Payload, ad.Value()...)
		}
	}
	if err := ad.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	const required = 1<<attrHook | 1<<attrFamily | 1<<attrWhere | 1<<attrSkb | 1<<attrTimestamp
	if have&required != required {
		return fmt.Errorf("%w: DROP without hook, family, where, skb or timestamp", ErrMalformed)
	}
	return nil
}

// nlmsgHeaderLen is sizeof(struct nlmsghdr).
const nlmsgHeaderLen = 16

// ParseMessage decodes one raw netlink message holding a DROP event (as
// recorded in testdata/kmod) into d. The message type is not checked: the
// family's ID is dynamic.
func ParseMessage(b []byte, d *Drop) error {
	if len(b) < nlmsgHeaderLen {
		return fmt.Errorf("%w: %d bytes, shorter than a netlink header", ErrMalformed, len(b))
	}
	n := binary.NativeEndian.Uint32(b)
	if n < nlmsgHeaderLen || int(n) > len(b) {
		return fmt.Errorf("%w: netlink length %d of %d bytes", ErrMalformed, n, len(b))
	}
	var gm genetlink.Message
	if err := gm.UnmarshalBinary(b[nlmsgHeaderLen:n]); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return d.decode(gm)
}
