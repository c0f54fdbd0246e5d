package ringrec

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/pktfate/pktfate/fate"
)

// A raw capture (pktfate trace --output-raw) is the ebpf source's ring
// records as the BPF programs wrote them, with what it takes to decode
// them later (pktfate report): perf's trick, record now and format
// afterwards, so that the traced machine pays for a copy per event, not
// for decoding and rendering.
//
// The file is RawMagic and then frames: a little-endian uint32 whose top
// four bits are the frame's kind and whose low 28 bits its length, then
// that many bytes. The first frame is the header (JSON, RawHeader); then
// records, each new location's name before the first record at it, each
// interface the records name only by index before the first of them; the
// last frame is the trailer (JSON, RawTrailer), written when the capture
// ends. A file without a trailer was cut (killed): whether it lost events
// is unknown, and what it holds up to the cut is readable.
const (
	RawMagic = "PKTFRAW\x01"

	frameHeader   = 1
	frameRecord   = 2
	frameSymbol   = 3 // uint64 address, then its formatted name
	frameIfname   = 4 // uint32 netns, uint32 ifindex, then the name
	frameTrailer  = 5
	frameKindBits = 28
	frameHdrLen   = 4
	frameMaxLen   = 1<<frameKindBits - 1
	// rawFrameMax bounds a frame a reader accepts: a record is under 512
	// bytes, the JSON frames under a few MiB.
	rawFrameMax = 16 << 20
)

// RawVersion is the version of the raw capture format.
const RawVersion = 1

// RawHeader is what a raw capture knows when it starts.
type RawHeader struct {
	Version int `json:"version"`
	// EventSize is the size of a full struct event: a reader with another
	// layout refuses the file.
	EventSize int       `json:"event_size"`
	Pktfate   string    `json:"pktfate"`
	Hostname  string    `json:"hostname,omitempty"`
	Kernel    string    `json:"kernel,omitempty"`
	Started   time.Time `json:"started"`
	// ClockOffset is CLOCK_REALTIME - CLOCK_MONOTONIC in ns (Clock).
	ClockOffset int64 `json:"clock_offset_ns"`
	// Reasons and Subsys are the running kernel's enum skb_drop_reason
	// and enum skb_drop_reason_subsys (Reasons.Table).
	Reasons []NamedValue `json:"reasons"`
	Subsys  []NamedValue `json:"subsys,omitempty"`
	// Filter is the pcap-filter expression; records the kernel did not
	// filter (fate.Event.KernelFiltered) are filtered when read.
	Filter string `json:"filter,omitempty"`
	// FilterReasons keeps only drops with these reasons (when read), as
	// the trace checked them: upper case, without SKB_DROP_REASON_.
	FilterReasons []string `json:"filter_reasons,omitempty"`
	// NFBlind is Decoder.NFBlind.
	NFBlind string `json:"nf_blind,omitempty"`
	// HomeNetns is the namespace text output leaves unnamed.
	HomeNetns uint32 `json:"home_netns,omitempty"`
}

// RawTrailer is what a raw capture knows when it ends: the summary as the
// trace made it, without the counts of events (which come from the
// records).
type RawTrailer struct {
	Records uint64    `json:"records"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	// Lost is every loss counter (fate.Summary.Lost).
	Lost []fate.Loss `json:"lost"`
	// Ignored is the information the sources counted (fate.Summary.Ignored).
	Ignored  map[string]uint64   `json:"ignored,omitempty"`
	Unknowns []string            `json:"unknowns,omitempty"`
	Notes    []string            `json:"notes,omitempty"`
	Sources  []fate.SourceStatus `json:"sources,omitempty"`
}

// RawWriter writes a raw capture. Record is called on the ring's
// goroutine; Close once, after the last Record. The first write error
// stops the writing: Err returns it, and Unwritten counts the records
// that were not written after it.
type RawWriter struct {
	// out takes buf when it is full: the frames are appended to buf in
	// place (one copy of each record, no call per piece).
	out io.Writer
	buf []byte
	err error
	// Symbols names the locations (each new address once, formatted).
	Symbols *Symbols
	// Ifname names an interface known only by its index (nil: none).
	Ifname func(netns, ifindex uint32) string

	records, unwritten uint64
	// inBuf counts the records in buf: a failed write loses them.
	inBuf   uint64
	locs    [8]uint64
	nextLoc int
	seenLoc map[uint64]bool
	seenIf  map[[2]uint32]bool
	lastIf  [2]uint32
	// OnRecord, when set, is called after each record is written (the
	// trace's --count).
	OnRecord func(n uint64)
}

// rawBuffer is the writer's buffer: large writes, few system calls.
const rawBuffer = 1 << 20

// NewRawWriter writes the magic and the header to w.
func NewRawWriter(w io.Writer, h RawHeader) (*RawWriter, error) {
	h.Version, h.EventSize = RawVersion, int(EventSize)
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	rw := &RawWriter{out: w, buf: make([]byte, 0, rawBuffer), seenLoc: map[uint64]bool{}, seenIf: map[[2]uint32]bool{}}
	rw.buf = append(rw.buf, RawMagic...)
	rw.frame(frameHeader, b)
	if err := rw.Flush(); err != nil {
		return nil, err
	}
	return rw, nil
}

// frame appends one frame to the buffer, writing the buffer out first
// when the frame does not fit (a frame larger than the buffer, a long
// header or trailer, goes out on its own). After a write error it does
// nothing: Err has the error.
func (rw *RawWriter) frame(kind uint32, b []byte) {
	if rw.err != nil {
		return
	}
	if len(rw.buf)+frameHdrLen+len(b) > cap(rw.buf) {
		if rw.Flush() != nil {
			return
		}
	}
	rw.buf = binary.LittleEndian.AppendUint32(rw.buf, kind<<frameKindBits|uint32(len(b)))
	if len(b) > cap(rw.buf)-len(rw.buf) {
		if rw.Flush() == nil {
			_, rw.err = rw.out.Write(b)
		}
		return
	}
	rw.buf = append(rw.buf, b...)
}

// Record writes one ring record (it need not stay valid after the call).
func (rw *RawWriter) Record(raw []byte) {
	if rw.err != nil {
		rw.unwritten++
		return
	}
	if len(raw) >= int(OffData) {
		le := binary.LittleEndian
		if n := int(OffData) + int(le.Uint16(raw[OffCapLen:])); n < len(raw) {
			// The programs reserve the snap length; the packet may be
			// shorter.
			raw = raw[:n]
		}
		if addr := le.Uint64(raw[OffLocation:]); addr != 0 {
			rw.location(addr)
		}
		if raw[OffIfname] == 0 {
			if ifx := le.Uint32(raw[OffIfindex:]); ifx != 0 && rw.Ifname != nil {
				rw.iface(le.Uint32(raw[OffNetns:]), ifx)
			}
		}
	}
	if len(raw) > frameMaxLen {
		raw = raw[:frameMaxLen]
	}
	rw.frame(frameRecord, raw)
	if rw.err != nil {
		// The record was in the buffer the failed write took.
		rw.unwritten++
		return
	}
	rw.records++
	rw.inBuf++
	if rw.OnRecord != nil {
		rw.OnRecord(rw.records)
	}
}

// location writes addr's name the first time addr is seen.
func (rw *RawWriter) location(addr uint64) {
	for _, a := range rw.locs {
		if a == addr {
			return
		}
	}
	rw.locs[rw.nextLoc] = addr
	rw.nextLoc = (rw.nextLoc + 1) % len(rw.locs)
	if rw.seenLoc[addr] {
		return
	}
	rw.seenLoc[addr] = true
	name := rw.Symbols.Format(addr)
	b := make([]byte, 8, 8+len(name))
	binary.LittleEndian.PutUint64(b, addr)
	rw.frame(frameSymbol, append(b, name...))
}

// iface writes the name of (netns, ifindex) the first time it is seen.
func (rw *RawWriter) iface(netns, ifindex uint32) {
	k := [2]uint32{netns, ifindex}
	if k == rw.lastIf || rw.seenIf[k] {
		rw.lastIf = k
		return
	}
	rw.lastIf = k
	rw.seenIf[k] = true
	name := rw.Ifname(netns, ifindex)
	if name == "" {
		return
	}
	b := make([]byte, 8, 8+len(name))
	binary.LittleEndian.PutUint32(b, netns)
	binary.LittleEndian.PutUint32(b[4:], ifindex)
	rw.frame(frameIfname, append(b, name...))
}

// Records returns how many records were written.
func (rw *RawWriter) Records() uint64 { return rw.records }

// Unwritten returns how many records were not written after an error.
func (rw *RawWriter) Unwritten() uint64 { return rw.unwritten }

// Err returns the first write error.
func (rw *RawWriter) Err() error { return rw.err }

// Flush writes out what is buffered.
func (rw *RawWriter) Flush() error {
	if rw.err == nil && len(rw.buf) > 0 {
		var n int
		n, rw.err = rw.out.Write(rw.buf)
		if rw.err == nil && n < len(rw.buf) {
			rw.err = io.ErrShortWrite
		}
		if rw.err != nil {
			// What the buffer held may be cut anywhere: none of its
			// records counts as written.
			rw.records -= rw.inBuf
			rw.unwritten += rw.inBuf
		}
		rw.buf, rw.inBuf = rw.buf[:0], 0
	}
	return rw.err
}

// Close writes the trailer and flushes (the underlying file is the
// caller's to close).
func (rw *RawWriter) Close(t RawTrailer) error {
	t.Records = rw.records
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if rw.err != nil {
		return rw.err
	}
	rw.frame(frameTrailer, b)
	return rw.Flush()
}

// RawReader reads a raw capture.
type RawReader struct {
	r      *bufio.Reader
	off    int64
	Header RawHeader
	// Trailer is set once Next has returned io.EOF after the trailer.
	Trailer *RawTrailer
	symbols map[uint64]string
	ifnames map[[2]uint32]string
	buf     []byte
	records uint64
}

// ErrRawCut is returned by Next when the file ends before its trailer.
var ErrRawCut = errors.New("the raw capture ends before its trailer (it was killed, or the file was cut)")

// NewRawReader reads the magic and the header.
func NewRawReader(r io.Reader) (*RawReader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<20)
	}
	rr := &RawReader{r: br, symbols: map[uint64]string{}, ifnames: map[[2]uint32]string{}}
	var magic [len(RawMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || string(magic[:]) != RawMagic {
		return nil, errors.New("not a raw capture written by pktfate (no PKTFRAW magic)")
	}
	rr.off = int64(len(magic))
	kind, b, err := rr.frame()
	if err != nil {
		return nil, fmt.Errorf("reading the raw capture's header: %w", err)
	}
	if kind != frameHeader {
		return nil, fmt.Errorf("the raw capture's first frame is of kind %d, not its header", kind)
	}
	if err := json.Unmarshal(b, &rr.Header); err != nil {
		return nil, fmt.Errorf("the raw capture's header: %w", err)
	}
	if rr.Header.Version != RawVersion {
		return nil, fmt.Errorf("raw capture format version %d: this pktfate reads version %d (use the pktfate that wrote it)", rr.Header.Version, RawVersion)
	}
	if rr.Header.EventSize != int(EventSize) {
		return nil, fmt.Errorf("the raw capture's records are %d bytes, this pktfate's %d: it was written by another version (use the pktfate that wrote it)", rr.Header.EventSize, EventSize)
	}
	return rr, nil
}

// Records returns how many records Next has returned.
func (rr *RawReader) Records() uint64 { return rr.records }

// Offset returns the byte offset of the next frame.
func (rr *RawReader) Offset() int64 { return rr.off }

func (rr *RawReader) frame() (uint32, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(rr.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.EOF
		}
		return 0, nil, io.ErrUnexpectedEOF
	}
	v := binary.LittleEndian.Uint32(hdr[:])
	kind, n := v>>frameKindBits, int(v&frameMaxLen)
	if n > rawFrameMax {
		return 0, nil, fmt.Errorf("frame of %d bytes is too large", n)
	}
	// Grown as the bytes come: a damaged length allocates no more than
	// the file holds.
	b := rr.buf[:0]
	for len(b) < n {
		chunk := min(n-len(b), 1<<20)
		b = slices.Grow(b, chunk)
		m, err := io.ReadFull(rr.r, b[len(b):len(b)+chunk])
		b = b[:len(b)+m]
		if err != nil {
			rr.buf = b
			return 0, nil, io.ErrUnexpectedEOF
		}
	}
	rr.buf = b
	rr.off += 4 + int64(n)
	return kind, b, nil
}

// Next returns the next record (valid until the next call). At the
// trailer it returns io.EOF with Trailer set; at an end without one,
// ErrRawCut.
func (rr *RawReader) Next() ([]byte, error) {
	for {
		if rr.Trailer != nil {
			return nil, io.EOF
		}
		kind, b, err := rr.frame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrRawCut
		} else if err != nil {
			return nil, err
		}
		switch kind {
		case frameRecord:
			rr.records++
			return b, nil
		case frameSymbol:
			if len(b) >= 8 {
				rr.symbols[binary.LittleEndian.Uint64(b)] = string(b[8:])
			}
		case frameIfname:
			if len(b) >= 8 {
				rr.ifnames[[2]uint32{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])}] = string(b[8:])
			}
		case frameTrailer:
			var t RawTrailer
			if err := json.Unmarshal(b, &t); err != nil {
				return nil, fmt.Errorf("the raw capture's trailer: %w", err)
			}
			rr.Trailer = &t
			return nil, io.EOF
		default:
			return nil, fmt.Errorf("frame of unknown kind %d at byte offset %d", kind, rr.off)
		}
	}
}

// Decoder returns a Decoder naming reasons and locations as the capture
// recorded them; its Symbols follow the names the reader meets.
func (rr *RawReader) Decoder() *Decoder {
	r := NewReasons()
	for _, v := range rr.Header.Reasons {
		r.Add(v.Value, v.Name)
	}
	for _, v := range rr.Header.Subsys {
		r.AddSubsys(v.Value, v.Name)
	}
	d := NewDecoder(r, &Symbols{fixed: rr.symbols}, FixedClock(rr.Header.ClockOffset))
	d.NFBlind = rr.Header.NFBlind
	return d
}

// Ifname returns the name the capture recorded for an interface the
// records name only by index, or "".
func (rr *RawReader) Ifname(netns, ifindex uint32) string {
	return rr.ifnames[[2]uint32{netns, ifindex}]
}
