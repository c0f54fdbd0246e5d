package render

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pktfate/pktfate/fate"
)

// NDJSON writes one JSON object per line: "type":"event" lines, then one
// "type":"summary" line. Field names are a stable contract; fields that do
// not apply to an event are omitted.
type NDJSON struct {
	// Lines are appended straight into buf, which goes to w in large
	// writes: no per-line copy.
	w   io.Writer
	buf []byte
	err error
	ts  timeCache

	// Consecutive events mostly share their reason, location and
	// interface: the rendered JSON of those fields is kept and reused
	// while they stay equal, which costs a few comparisons instead of
	// escaping and number formatting.
	heads  fragCache[headKey]
	ifaces fragCache[ifaceKey]
	addrs  fragCache[addrKey]
}

// fragCache keeps the rendered JSON of the last few distinct keys, looked
// up by linear scan and replaced round robin: a handful of comparisons,
// no hashing.
type fragCache[K comparable] struct {
	keys [8]K
	json [8][]byte
	n    int
	next int
}

// get returns the cached JSON for k, or nil.
func (c *fragCache[K]) get(k K) []byte {
	for i := 0; i < c.n; i++ {
		if c.keys[i] == k {
			return c.json[i]
		}
	}
	return nil
}

// put renders k with f into a reused slot and returns the JSON.
func (c *fragCache[K]) put(k K, f func([]byte) []byte) []byte {
	i := c.next
	c.next = (c.next + 1) % len(c.keys)
	if c.n < len(c.keys) {
		c.n++
	}
	c.keys[i] = k
	c.json[i] = f(c.json[i][:0])
	return c.json[i]
}

type addrKey struct {
	src  bool
	addr netip.Addr
}

type headKey struct {
	fate                                            fate.Fate
	source, reason, location, hook, family, verdict string
}

type ifaceKey struct {
	ifindex, netns uint32
	ifname         string
	guessed        bool
}

func (r *NDJSON) appendAddr(b []byte, src bool, a netip.Addr) []byte {
	k := addrKey{src, a}
	if j := r.addrs.get(k); j != nil {
		return append(b, j...)
	}
	return append(b, r.addrs.put(k, func(h []byte) []byte {
		if src {
			h = append(h, `,"src":"`...)
		} else {
			h = append(h, `,"dst":"`...)
		}
		h = a.AppendTo(h)
		return append(h, '"')
	})...)
}

// NewNDJSON returns an NDJSON renderer writing to w.
func NewNDJSON(w io.Writer) *NDJSON {
	return &NDJSON{w: w, buf: make([]byte, 0, ndjsonBuffer+4096)}
}

func (r *NDJSON) appendHead(b []byte, e *fate.Event) []byte {
	k := headKey{e.Fate, e.Source, e.Reason, e.Location, e.Hook, e.Family, e.Verdict}
	if j := r.heads.get(k); j != nil {
		return append(b, j...)
	}
	return append(b, r.heads.put(k, func(h []byte) []byte { return renderHead(h, e) })...)
}

func renderHead(h []byte, e *fate.Event) []byte {
	h = append(h, `","source":`...)
	h = appendString(h, e.Source)
	h = append(h, `,"fate":"`...)
	h = append(h, e.Fate.String()...)
	h = append(h, '"')
	if e.Reason != "" {
		h = append(h, `,"reason":`...)
		h = appendString(h, e.Reason)
	}
	if e.Location != "" {
		h = append(h, `,"location":`...)
		h = appendString(h, e.Location)
	}
	if e.Hook != "" {
		h = append(h, `,"hook":`...)
		h = appendString(h, e.Hook)
		h = append(h, `,"family":`...)
		h = appendString(h, e.Family)
		h = append(h, `,"nf_verdict":`...)
		h = appendString(h, e.Verdict)
	}
	return h
}

func (r *NDJSON) appendIface(b []byte, e *fate.Event) []byte {
	k := ifaceKey{e.Ifindex, e.Netns, e.Ifname, e.NetnsFrom == fate.NetnsGuessed}
	if j := r.ifaces.get(k); j != nil {
		return append(b, j...)
	}
	return append(b, r.ifaces.put(k, func(h []byte) []byte { return renderIface(h, e) })...)
}

func renderIface(h []byte, e *fate.Event) []byte {
	if e.Ifindex != 0 {
		h = append(h, `,"ifindex":`...)
		h = strconv.AppendUint(h, uint64(e.Ifindex), 10)
	}
	if e.Ifname != "" {
		h = append(h, `,"ifname":`...)
		h = appendString(h, e.Ifname)
	}
	if e.Netns != 0 {
		h = append(h, `,"netns":`...)
		h = strconv.AppendUint(h, uint64(e.Netns), 10)
		if e.NetnsFrom == fate.NetnsGuessed {
			h = append(h, `,"netns_from":"iif"`...)
		}
	}
	if h == nil {
		h = []byte{} // cached as present, even when empty
	}
	return h
}

// ndjsonBuffer is how much output is gathered before one write.
const ndjsonBuffer = 64 << 10

// commit keeps the line appended to r.buf and writes the buffer out once
// it is large enough.
func (r *NDJSON) commit(b []byte) error {
	r.buf = b
	if len(r.buf) >= ndjsonBuffer {
		return r.Flush()
	}
	return r.err
}

// Event implements Renderer.
func (r *NDJSON) Event(e *fate.Event) error {
	b := r.buf
	b = append(b, `{"type":"event","time":"`...)
	b = r.ts.appendRFC3339(b, e.Time)
	b = r.appendHead(b, e)
	b = r.appendIface(b, e)
	b = r.appendPacket(b, e)
	if e.Len != 0 {
		b = append(b, `,"skb_len":`...)
		b = strconv.AppendUint(b, uint64(e.Len), 10)
	}
	b = append(b, `,"cpu":`...)
	b = strconv.AppendUint(b, uint64(e.CPU), 10)
	if e.Skb != 0 {
		b = append(b, `,"skb":"0x`...)
		b = appendHex(b, e.Skb)
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	return r.commit(b)
}

// appendPacket appends mark, len and the decoded headers.
func (r *NDJSON) appendPacket(b []byte, e *fate.Event) []byte {
	b = append(b, `,"mark":`...)
	b = strconv.AppendUint(b, uint64(e.Mark), 10)
	b = append(b, `,"len":`...)
	b = strconv.AppendUint(b, uint64(fate.WireLen(e)), 10)
	p := &e.Packet
	if p.Proto != "" {
		b = append(b, `,"proto":"`...)
		b = append(b, p.Proto...)
		b = append(b, '"')
	} else if e.EtherType != 0 {
		b = append(b, `,"ethertype":`...)
		b = strconv.AppendUint(b, uint64(e.EtherType), 10)
	}
	if p.Src.IsValid() {
		b = r.appendAddr(b, true, p.Src)
	}
	if p.Dst.IsValid() {
		b = r.appendAddr(b, false, p.Dst)
	}
	switch p.Proto {
	case "udp", "tcp":
		b = append(b, `,"sport":`...)
		b = strconv.AppendUint(b, uint64(p.Sport), 10)
		b = append(b, `,"dport":`...)
		b = strconv.AppendUint(b, uint64(p.Dport), 10)
		if p.PayloadLen != 0 {
			b = append(b, `,"payload_len":`...)
			b = strconv.AppendUint(b, uint64(p.PayloadLen), 10)
		}
		if p.Proto == "tcp" {
			b = append(b, `,"tcp_flags":"`...)
			b = appendTCPFlags(b, p.TCPFlags)
			b = append(b, '"')
		}
	case "icmp", "icmp6":
		b = append(b, `,"icmp_type":`...)
		b = strconv.AppendUint(b, uint64(p.ICMPType), 10)
		b = append(b, `,"icmp_code":`...)
		b = strconv.AppendUint(b, uint64(p.ICMPCode), 10)
	}
	return b
}

// Fate implements Renderer: one "type":"fate" line per packet, with the
// agreed answer, the verdict and every observer's status.
func (r *NDJSON) Fate(f *fate.FateRecord) error {
	e := f.Event
	b := r.buf
	b = append(b, `{"type":"fate","id":`...)
	b = strconv.AppendUint(b, f.ID, 10)
	b = append(b, `,"time":"`...)
	b = r.ts.appendRFC3339(b, e.Time)
	b = append(b, `","verdict":"`...)
	b = append(b, f.Verdict.String()...)
	b = append(b, `","fate":"`...)
	b = append(b, e.Fate.String()...)
	b = append(b, '"')
	if e.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, e.Reason)
	}
	if e.Location != "" {
		b = append(b, `,"location":`...)
		b = appendString(b, e.Location)
	}
	if e.Hook != "" {
		b = append(b, `,"hook":`...)
		b = appendString(b, e.Hook)
		b = append(b, `,"family":`...)
		b = appendString(b, e.Family)
		b = append(b, `,"nf_verdict":`...)
		b = appendString(b, e.Verdict)
	}
	b = r.appendIface(b, e)
	b = r.appendPacket(b, e)
	if f.Late {
		b = append(b, `,"late":true`...)
	}
	b = append(b, `,"observers":{`...)
	for i, o := range f.Observers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, o.Name...)
		b = append(b, `":{"status":"`...)
		b = append(b, o.Status.String()...)
		b = append(b, '"')
		if o.Why != "" && o.Status == fate.StatusBlind {
			b = append(b, `,"why":`...)
			b = appendString(b, o.Why)
		}
		if o.Status == fate.StatusSaw {
			if o.Sighting.Reason != "" {
				b = append(b, `,"reason":`...)
				b = appendString(b, o.Sighting.Reason)
			}
			if o.Sighting.Location != "" {
				b = append(b, `,"location":`...)
				b = appendString(b, o.Sighting.Location)
			}
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	if len(f.Conflicts) > 0 {
		b = append(b, `,"conflicts":[`...)
		for i, c := range f.Conflicts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, c)
		}
		b = append(b, ']')
	}
	b = append(b, "}\n"...)
	return r.commit(b)
}

// Summary implements Renderer: the summary line is written once, by
// encoding/json from the schema's type.
func (r *NDJSON) Summary(s *fate.Summary) error {
	line, err := json.Marshal(fate.NewSummaryLine(s))
	if err != nil {
		return fmt.Errorf("encoding the summary: %w", err)
	}
	r.buf = append(append(r.buf, line...), '\n')
	return r.Flush()
}

// Flush implements Renderer.
func (r *NDJSON) Flush() error {
	if r.err != nil {
		return r.err
	}
	if len(r.buf) > 0 {
		_, r.err = r.w.Write(r.buf)
		r.buf = r.buf[:0]
	}
	return r.err
}

var tcpFlagNames = "FSRPAUEC"

func appendTCPFlags(b []byte, f uint8) []byte {
	for i := range 8 {
		if f&(1<<i) != 0 {
			b = append(b, tcpFlagNames[i])
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendHex appends v in lower-case hex without leading zeros, like
// strconv.AppendUint(b, v, 16) without its general-base slow path.
func appendHex(b []byte, v uint64) []byte {
	if v>>60 != 0 { // a kernel address: all sixteen digits, a byte at a time
		var d [16]byte
		for i := 14; i >= 0; i -= 2 {
			x := byte(v)
			d[i], d[i+1] = hexDigits[x>>4], hexDigits[x&0xf]
			v >>= 8
		}
		return append(b, d[:]...)
	}
	var d [16]byte
	i := len(d)
	for {
		i--
		d[i] = hexDigits[v&0xf]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

// jsonSafe marks the bytes appendString copies as they are: printable
// ASCII other than '"' and '\\'.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 (interface names are arbitrary bytes).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// timeCache formats RFC 3339 UTC timestamps with nanoseconds, reusing the
// formatted date and time of day while the second does not change.
type timeCache struct {
	sec  int64    // the Unix second of head
	head [20]byte // "2006-01-02T15:04:05." of sec
	ok   bool
	day  int64 // the day of head's date, which changes far less often
}

// digitPairs holds "00" to "99".
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendRFC3339 appends t in UTC with nanoseconds. Events of one second
// share everything up to the fraction: the date is computed once a day,
// the time of day once a second by arithmetic, and the nine digits of the
// fraction two at a time.
func (c *timeCache) appendRFC3339(b []byte, t time.Time) []byte {
	if unix := t.Unix(); !c.ok || unix != c.sec {
		day, sod := unix/86400, unix%86400
		if sod < 0 {
			day, sod = day-1, sod+86400
		}
		if !c.ok || day != c.day {
			if h := appendDateTime(c.head[:0], t.UTC()); len(h) != 19 { // a year outside 0..9999
				c.ok = false
				return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000Z")
			}
			c.day = day
		}
		c.sec, c.ok = unix, true
		h, m, sec := sod/3600*2, sod/60%60*2, sod%60*2
		c.head[11], c.head[12] = digitPairs[h], digitPairs[h+1]
		c.head[14], c.head[15] = digitPairs[m], digitPairs[m+1]
		c.head[17], c.head[18] = digitPairs[sec], digitPairs[sec+1]
		c.head[19] = '.'
	}
	b = append(b, c.head[:]...)
	ns := uint32(t.Nanosecond())
	var d [10]byte
	for i := 7; i >= 1; i -= 2 {
		q := ns % 100 * 2
		ns /= 100
		d[i], d[i+1] = digitPairs[q], digitPairs[q+1]
	}
	d[0], d[9] = byte('0'+ns), 'Z'
	return append(b, d[:]...)
}

// appendDateTime appends t as "2006-01-02T15:04:05" without the cost of
// time.Time.AppendFormat's layout parsing (it runs once a second of events).
func appendDateTime(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, "2006-01-02T15:04:05")
	}
	hour, minute, sec := t.Clock()
	b = append(b,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+month/10), byte('0'+month%10), '-',
		byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	return b
}
