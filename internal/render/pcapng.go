package render

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pktfate/pktfate/fate"
)

// Pcapng writes every packet with its fate into a pcapng file that
// Wireshark opens: one interface per observer, and per packet one
// enhanced packet block for each observer that saw it, all with the same
// packet id, and a comment stating the fate ("pktfate: fate=drop
// reason=NO_SOCKET location=... verdict=confirmed observers=ebpf+dropmon").
//
// Packets are captured from their network header, so the link type is
// LINUX_SLL2: its 20-byte header carries the EtherType, the interface index
// and the direction. Blocks are only ever written whole; after Flush the
// file is valid up to its last packet.
type Pcapng struct {
	// Correlated makes Event a no-op: packets are written from fate
	// records, which link every observer's sighting.
	Correlated bool

	out    io.Writer
	w      *pcapgo.NgWriter
	ifaces map[string]int
	buf    []byte
	nextID uint64
}

// sll2HeaderLen is the size of the LINUX_SLL2 pseudo-header.
const sll2HeaderLen = 20

// NewPcapng writes the section header and returns the renderer.
func NewPcapng(w io.Writer, app string) (*Pcapng, error) {
	ng, err := pcapgo.NewNgWriterInterface(w, observerInterface(fate.ObserverEBPF), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{OS: runtime.GOOS, Application: app,
			Comment: "packet fates traced by pktfate: one interface per observer"},
	})
	if err != nil {
		return nil, fmt.Errorf("writing pcapng header: %w", err)
	}
	return &Pcapng{out: w, w: ng, ifaces: map[string]int{fate.ObserverEBPF: 0}, buf: make([]byte, 0, 512)}, nil
}

func observerInterface(name string) pcapgo.NgInterface {
	return pcapgo.NgInterface{
		Name:                "pktfate:" + name,
		Description:         "pktfate observer " + name,
		OS:                  runtime.GOOS,
		LinkType:            layers.LinkTypeLinuxSLL2,
		TimestampResolution: 9,
		SnapLength:          0,
	}
}

func (p *Pcapng) iface(observer string) (int, error) {
	if id, ok := p.ifaces[observer]; ok {
		return id, nil
	}
	id, err := p.w.AddInterface(observerInterface(observer))
	if err != nil {
		return 0, fmt.Errorf("adding pcapng interface for %s: %w", observer, err)
	}
	p.ifaces[observer] = id
	return id, nil
}

// Event implements Renderer: without correlation every event is one
// packet of its own.
func (p *Pcapng) Event(e *fate.Event) error {
	if p.Correlated {
		return nil
	}
	p.nextID++
	return p.write(e, e.Source, e.Time, p.nextID, FateComment(e, "", e.Source, ""))
}

// Fate implements Renderer: the packet once per observer that saw it.
func (p *Pcapng) Fate(f *fate.FateRecord) error {
	p.nextID++
	e := f.Event
	var missed []string
	for _, o := range f.Observers {
		if o.Status == fate.StatusMissed || o.Status == fate.StatusLost {
			missed = append(missed, o.Name+":"+o.Status.String())
		}
	}
	comment := FateComment(e, f.Verdict.String(), f.ObserverList(), strings.Join(missed, ","))
	for _, c := range f.Conflicts {
		comment += " conflict=" + strconv.Quote(c)
	}
	for _, o := range f.Observers {
		if o.Status != fate.StatusSaw {
			continue
		}
		// Sightings share one clock: place each at its own time.
		t := e.Time.Add(time.Duration(int64(o.Sighting.Mono) - int64(e.Mono)))
		if err := p.write(e, o.Name, t, p.nextID, comment); err != nil {
			return err
		}
	}
	return nil
}

// FateComment formats the packet comment: space-separated key=value pairs,
// values quoted when they contain a space.
func FateComment(e *fate.Event, verdict, observers, missed string) string {
	var b strings.Builder
	b.WriteString("pktfate:")
	kv := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteString(" " + k + "=")
		if strings.ContainsAny(v, " \"") {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	kv("fate", e.Fate.String())
	kv("reason", e.Reason)
	kv("location", e.Location)
	kv("hook", e.Hook)
	kv("family", e.Family)
	kv("nf_verdict", e.Verdict)
	kv("verdict", verdict)
	kv("observers", observers)
	kv("missed", missed)
	if e.Netns != 0 {
		kv("netns", strconv.FormatUint(uint64(e.Netns), 10))
	}
	if e.NetnsFrom == fate.NetnsGuessed {
		kv("netns_from", e.NetnsFrom) // placed by its arrival interface: a guess
	}
	kv("ifname", e.Ifname)
	return b.String()
}

func direction(hook string) (pcapgo.NgEpbFlag, uint8) {
	switch hook {
	case "PRE_ROUTING", "LOCAL_IN", "FORWARD":
		return pcapgo.NgEpbFlagDirectionInbound, 0 // PACKET_HOST
	case "LOCAL_OUT", "POST_ROUTING":
		return pcapgo.NgEpbFlagDirectionOutbound, 4 // PACKET_OUTGOING
	}
	return pcapgo.NgEpbFlagDirectionUnknown, 0
}

func (p *Pcapng) write(e *fate.Event, observer string, t time.Time, id uint64, comment string) error {
	ifc, err := p.iface(observer)
	if err != nil {
		return err
	}
	data := e.Data
	if e.MACHeader && len(data) >= 14 {
		data = data[14:] // the Ethernet header; SLL2 says the same
	}
	dir, pkttype := direction(e.Hook)
	b := p.buf[:0]
	b = binary.BigEndian.AppendUint16(b, e.EtherType)
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint32(b, e.Ifindex)
	b = binary.BigEndian.AppendUint16(b, 1) // ARPHRD_ETHER
	b = append(b, pkttype, 0)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0) // no link-layer address
	b = append(b, data...)
	p.buf = b
	orig := sll2HeaderLen + wireLength(data, int(e.Len))
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(b), Length: max(orig, len(b)), InterfaceIndex: ifc}
	flags := &pcapgo.NgEpbFlags{Direction: dir}
	if err := p.w.WritePacketWithOptions(ci, b, pcapgo.NgPacketOptions{
		Comments: []string{comment}, PacketID: &id, Flags: flags,
	}); err != nil {
		return fmt.Errorf("writing pcapng packet: %w", err)
	}
	return nil
}

// wireLength is the packet's length from its network header: the IP
// header's own length field where there is one, else skb->len.
func wireLength(d []byte, skbLen int) int {
	switch {
	case len(d) >= 4 && d[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(d[2:4]))
	case len(d) >= 6 && d[0]>>4 == 6:
		return 40 + int(binary.BigEndian.Uint16(d[4:6]))
	}
	return max(skbLen, len(d))
}

// Summary implements Renderer: pcapng has no summary block, so the summary
// goes into an interface statistics block of the first interface, as the
// comment (the NDJSON summary line, which `pktfate report` reads back),
// with every observer's losses as its dropped count.
func (p *Pcapng) Summary(s *fate.Summary) error {
	var line strings.Builder
	nd := NewNDJSON(&line)
	if err := nd.Summary(s); err != nil {
		return err
	}
	lost := map[string]uint64{}
	for _, c := range s.Lost {
		lost[c.Observer] += c.Value
	}
	// gopacket's writer drops the comment of statistics blocks: write them
	// here, after flushing its buffer so blocks stay in order.
	if err := p.w.Flush(); err != nil {
		return err
	}
	names := make([]string, len(p.ifaces))
	for name, id := range p.ifaces {
		names[id] = name
	}
	for id, name := range names {
		comment := ""
		if id == 0 {
			comment = strings.TrimSpace(line.String())
		}
		if _, err := p.out.Write(statsBlock(uint32(id), s.Start, s.End, lost[name], comment)); err != nil {
			return fmt.Errorf("writing pcapng statistics: %w", err)
		}
	}
	return nil
}

// maxOptionLen is the most bytes one pcapng option carries (a multiple of
// four, below the 16-bit length's limit).
const maxOptionLen = 65532

// statsBlock builds an interface statistics block (pcapng block type 5)
// with a comment, start and end times (ns), and the dropped count.
func statsBlock(iface uint32, start, end time.Time, dropped uint64, comment string) []byte {
	le := binary.LittleEndian
	opt := func(b []byte, code uint16, v []byte) []byte {
		b = le.AppendUint16(b, code)
		b = le.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	ts := func(t time.Time) []byte {
		ns := uint64(t.UnixNano())
		return le.AppendUint32(le.AppendUint32(nil, uint32(ns>>32)), uint32(ns))
	}
	body := le.AppendUint32(nil, iface)
	body = append(body, ts(end)...)
	// An option holds at most 65535 bytes: a longer summary goes into
	// several comments, which a reader joins in order.
	for c := comment; c != ""; {
		n := min(len(c), maxOptionLen)
		body = opt(body, 1, []byte(c[:n]))
		c = c[n:]
	}
	body = opt(body, 2, ts(start))
	body = opt(body, 3, ts(end))
	body = opt(body, 5, le.AppendUint64(nil, dropped))
	body = opt(body, 0, nil)
	total := uint32(12 + len(body))
	b := le.AppendUint32(nil, 5)
	b = le.AppendUint32(b, total)
	b = append(b, body...)
	return le.AppendUint32(b, total)
}

// Flush implements Renderer.
func (p *Pcapng) Flush() error { return p.w.Flush() }
