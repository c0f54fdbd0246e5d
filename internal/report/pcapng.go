package report

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pktfate/pktfate/fate"
)

// A small pcapng reader of what pktfate writes (internal/render/pcapng.go):
// section headers, interfaces, enhanced packet blocks with their comment
// and packet id, and interface statistics whose comments carry the
// capture's summary, possibly in several pieces. It reads block by block
// and never trusts a length it has not checked, so a damaged block is
// named and skipped, and a cut file is read up to the cut.

// pcapng block types and option codes (draft-ietf-opsawg-pcapng).
const (
	blockSHB = 0x0a0d0d0a
	blockIDB = 1
	blockISB = 5
	blockEPB = 6

	optEnd      = 0
	optComment  = 1
	optTsresol  = 9 // if_tsresol, in an IDB
	optIfName   = 2 // if_name, in an IDB
	optPacketID = 5 // epb_packetid, in an EPB
	byteOrder   = 0x1a2b3c4d
	maxBlock    = 64 << 20 // a block larger than this is damage
)

// ngBlock is one block read whole.
type ngBlock struct {
	typ  uint32
	body []byte
	off  int64
}

type ngReader struct {
	r     *bufio.Reader
	off   int64
	order binary.ByteOrder
	// tsres holds each interface's timestamp unit in ns, names its name
	// (the observer: "pktfate:ebpf").
	tsres []int64
	names []string
}

// next returns the next block, io.EOF at a clean end, or an error for a
// cut or a block whose length cannot be right (then the rest cannot be
// read).
func (n *ngReader) next() (*ngBlock, error) {
	var hdr [8]byte
	k, err := io.ReadFull(n.r, hdr[:])
	if k == 0 && errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	start := n.off
	if err != nil {
		return nil, fmt.Errorf("block at byte offset %d is cut short: the file is truncated", start)
	}
	typ := binary.LittleEndian.Uint32(hdr[:4])
	if typ == blockSHB {
		// The byte order follows the length: peek at the magic.
		magic, err := n.r.Peek(4)
		if err != nil {
			return nil, fmt.Errorf("section header at byte offset %d is cut short", start)
		}
		switch {
		case binary.LittleEndian.Uint32(magic) == byteOrder:
			n.order = binary.LittleEndian
		case binary.BigEndian.Uint32(magic) == byteOrder:
			n.order = binary.BigEndian
		default:
			return nil, fmt.Errorf("section header at byte offset %d has no byte-order magic", start)
		}
		n.tsres, n.names = nil, nil
	} else if n.order == nil {
		return nil, fmt.Errorf("block at byte offset %d comes before any section header", start)
	} else {
		typ = n.order.Uint32(hdr[:4])
	}
	total := n.order.Uint32(hdr[4:])
	if total < 12 || total%4 != 0 || total > maxBlock {
		return nil, fmt.Errorf("block at byte offset %d claims %d bytes: the file is damaged from there", start, total)
	}
	// Read what is there rather than allocate what the length claims: a
	// damaged length must not cost its 64 MiB.
	body, err := io.ReadAll(io.LimitReader(n.r, int64(total-8)))
	if err != nil || len(body) != int(total-8) {
		return nil, fmt.Errorf("block at byte offset %d is cut short: the file is truncated", start)
	}
	n.off += int64(total)
	if trailer := n.order.Uint32(body[len(body)-4:]); trailer != total {
		return &ngBlock{typ: typ, off: start}, fmt.Errorf("block at byte offset %d: lengths %d and %d differ", start, total, trailer)
	}
	return &ngBlock{typ: typ, body: body[:len(body)-4], off: start}, nil
}

// options walks the options starting at b; fn gets each code and value.
func (n *ngReader) options(b []byte, fn func(code uint16, v []byte)) error {
	for len(b) >= 4 {
		code, l := n.order.Uint16(b), int(n.order.Uint16(b[2:]))
		if code == optEnd {
			return nil
		}
		padded := (l + 3) &^ 3
		if 4+padded > len(b) {
			return fmt.Errorf("option %d claims %d bytes, %d are left", code, l, len(b)-4)
		}
		fn(code, b[4:4+l])
		b = b[4+padded:]
	}
	return nil
}

// packet is what an enhanced packet block says.
type packet struct {
	iface    uint32
	time     time.Time
	comments []string
	id       *uint64
	data     []byte // the captured bytes, from the LINUX_SLL2 header
}

func (n *ngReader) epb(b []byte) (*packet, error) {
	if len(b) < 20 {
		return nil, errors.New("enhanced packet block too short")
	}
	p := &packet{iface: n.order.Uint32(b)}
	ts := uint64(n.order.Uint32(b[4:]))<<32 | uint64(n.order.Uint32(b[8:]))
	capLen := int(n.order.Uint32(b[12:]))
	if int(p.iface) >= len(n.tsres) {
		return nil, fmt.Errorf("packet of interface %d, which was never described", p.iface)
	}
	padded := (capLen + 3) &^ 3
	if capLen < 0 || 20+padded > len(b) {
		return nil, fmt.Errorf("packet claims %d captured bytes, the block holds %d", capLen, len(b)-20)
	}
	p.time = time.Unix(0, int64(ts)*n.tsres[p.iface])
	p.data = b[20 : 20+capLen]
	err := n.options(b[20+padded:], func(code uint16, v []byte) {
		switch code {
		case optComment:
			p.comments = append(p.comments, string(v))
		case optPacketID:
			if len(v) == 8 {
				id := n.order.Uint64(v)
				p.id = &id
			}
		}
	})
	return p, err
}

func (n *ngReader) idb(b []byte) error {
	if len(b) < 8 {
		return errors.New("interface description block too short")
	}
	res := int64(1000) // microseconds, the default
	name := ""
	err := n.options(b[8:], func(code uint16, v []byte) {
		if code == optIfName {
			name = strings.TrimPrefix(string(v), "pktfate:")
		}
		if code == optTsresol && len(v) == 1 && v[0]&0x80 == 0 && v[0] <= 9 {
			res = 1
			for range 9 - int(v[0]) {
				res *= 10
			}
		}
	})
	n.tsres = append(n.tsres, res)
	n.names = append(n.names, name)
	return err
}

// isbComment returns the comment of an interface statistics block of
// interface 0: its pieces joined (a long summary takes several).
func (n *ngReader) isbComment(b []byte) (string, bool, error) {
	if len(b) < 12 || n.order.Uint32(b) != 0 {
		return "", false, nil
	}
	var parts []string
	err := n.options(b[12:], func(code uint16, v []byte) {
		if code == optComment {
			parts = append(parts, string(v))
		}
	})
	return strings.Join(parts, ""), len(parts) > 0, err
}

func readPcapng(r *bufio.Reader, opt Options) (*Result, error) {
	res := &Result{Format: "pcapng", Schema: -1}
	ng := &ngReader{r: r}
	b := newBuilder()
	var final *fate.Summary
	lastID := ^uint64(0)
	correlated := false
	for {
		blk, err := ng.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if blk == nil && err != nil {
			if ng.off == 0 {
				return nil, fmt.Errorf("not a readable pcapng file: %w", err)
			}
			res.Damage = append(res.Damage, Damage{Offset: ng.off, Why: err.Error()})
			break
		}
		damage := func(err error) { res.Damage = append(res.Damage, Damage{Offset: blk.off, Why: err.Error()}) }
		if err != nil {
			damage(err)
			continue
		}
		switch blk.typ {
		case blockIDB:
			if err := ng.idb(blk.body); err != nil {
				damage(err)
			}
		case blockEPB:
			p, err := ng.epb(blk.body)
			if err != nil {
				damage(err)
				continue
			}
			if len(p.comments) == 0 {
				continue
			}
			kv, ok := parseComment(p.comments[0])
			if !ok {
				continue
			}
			// Sightings of one packet share its packet id: count it once.
			if p.id != nil && *p.id == lastID {
				continue
			}
			if p.id != nil {
				lastID = *p.id
			}
			f, err := fate.ParseFate(kv["fate"])
			if err != nil {
				damage(fmt.Errorf("packet comment: %w", err))
				continue
			}
			res.Records++
			e := packetEvent(p, ng.names[p.iface], f, kv)
			var rec *fate.FateRecord
			if v, ok := kv["verdict"]; ok {
				correlated = true
				rec, err = packetFate(e, v, kv)
				if err != nil {
					damage(fmt.Errorf("packet comment: %w", err))
					continue
				}
				b.fate(e, v, rec.Confirmations())
			}
			b.event(e)
			if opt.Records != nil {
				if err := opt.Records(Record{Event: e, Fate: rec}); err != nil {
					return nil, errStop{err}
				}
			}
		case blockISB:
			c, ok, err := ng.isbComment(blk.body)
			if err != nil {
				damage(err)
			}
			if !ok || !strings.HasPrefix(c, "{") {
				continue
			}
			var h lineHead
			if json.Unmarshal([]byte(c), &h) != nil || h.Type != fate.LineSummary {
				damage(errors.New("the statistics comment is not a pktfate summary"))
				continue
			}
			s, schema, err := summaryOf([]byte(c), h.Schema)
			if err != nil {
				damage(fmt.Errorf("the summary is damaged: %w", err))
				continue
			}
			res.HasSummary, res.Schema, final = true, schema, s
		}
	}
	if !correlated {
		b.fates = false
	}
	res.Summary = b.finish(final)
	return res, nil
}

// packetEvent rebuilds the event of a packet block: the comment's fate
// and where, the LINUX_SLL2 header's EtherType and interface index, the
// headers decoded from the bytes after it.
func packetEvent(p *packet, observer string, f fate.Fate, kv map[string]string) *fate.Event {
	e := &fate.Event{Source: observer, Time: p.time, Fate: f, Reason: kv["reason"], Location: kv["location"],
		Hook: kv["hook"], Family: kv["family"], Verdict: kv["nf_verdict"], Ifname: kv["ifname"]}
	if n, err := strconv.ParseUint(kv["netns"], 10, 32); err == nil {
		e.Netns = uint32(n)
	}
	if kv["netns_from"] == fate.NetnsGuessed {
		e.NetnsFrom = fate.NetnsGuessed
	}
	if len(p.data) >= sll2HeaderLen {
		e.EtherType = binary.BigEndian.Uint16(p.data)
		e.Ifindex = binary.BigEndian.Uint32(p.data[4:])
		e.Data = p.data[sll2HeaderLen:]
		fate.DecodePacket(&e.Packet, e.EtherType, e.Data, false)
	}
	e.Len = uint32(fate.WireLen(e))
	return e
}

// packetFate rebuilds a fate record from a packet comment: its verdict,
// the observers that saw it ("observers=ebpf+nf") and those that missed
// or lost it ("missed=kmod:missed").
func packetFate(e *fate.Event, verdict string, kv map[string]string) (*fate.FateRecord, error) {
	r := &fate.FateRecord{Event: e}
	var err error
	if r.Verdict, err = parseVerdict(verdict); err != nil {
		return nil, err
	}
	for _, o := range strings.Split(kv["observers"], "+") {
		if o != "" {
			r.Observers = append(r.Observers, fate.ObserverReport{Name: o, Status: fate.StatusSaw})
		}
	}
	for _, m := range strings.Split(kv["missed"], ",") {
		name, status, ok := strings.Cut(m, ":")
		if !ok {
			continue
		}
		st, err := parseStatus(status)
		if err != nil {
			return nil, err
		}
		r.Observers = append(r.Observers, fate.ObserverReport{Name: name, Status: st})
	}
	return r, nil
}

// sll2HeaderLen is the size of the LINUX_SLL2 pseudo-header pktfate writes
// before each packet's network header.
const sll2HeaderLen = 20
