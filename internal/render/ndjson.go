package render

import (
	"bufio"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pktfate/pktfate/tracer"
)

// NDJSON writes one JSON object per line: "type":"event" lines, then one
// "type":"summary" line. Field names are a stable contract; fields that do
// not apply to an event are omitted.
type NDJSON struct {
	w   *bufio.Writer
	buf []byte
	ts  timeCache
}

// NewNDJSON returns an NDJSON renderer writing to w.
func NewNDJSON(w io.Writer) *NDJSON {
	return &NDJSON{w: bufio.NewWriterSize(w, 64<<10), buf: make([]byte, 0, 1024)}
}

// Event implements Renderer.
func (r *NDJSON) Event(e *tracer.Event) error {
	b := r.buf[:0]
	b = append(b, `{"type":"event","time":"`...)
	b = r.ts.appendRFC3339(b, e.Time)
	b = append(b, `","source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"fate":"`...)
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
		b = append(b, `,"verdict":`...)
		b = appendString(b, e.Verdict)
	}
	if e.Ifindex != 0 {
		b = append(b, `,"ifindex":`...)
		b = strconv.AppendUint(b, uint64(e.Ifindex), 10)
	}
	if e.Ifname != "" {
		b = append(b, `,"ifname":`...)
		b = appendString(b, e.Ifname)
	}
	if e.Netns != 0 {
		b = append(b, `,"netns":`...)
		b = strconv.AppendUint(b, uint64(e.Netns), 10)
	}
	b = append(b, `,"mark":`...)
	b = strconv.AppendUint(b, uint64(e.Mark), 10)
	b = append(b, `,"len":`...)
	b = strconv.AppendUint(b, uint64(e.Len), 10)
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
		b = append(b, `,"src":"`...)
		b = p.Src.AppendTo(b)
		b = append(b, '"')
	}
	if p.Dst.IsValid() {
		b = append(b, `,"dst":"`...)
		b = p.Dst.AppendTo(b)
		b = append(b, '"')
	}
	if p.Proto == "udp" || p.Proto == "tcp" {
		b = append(b, `,"sport":`...)
		b = strconv.AppendUint(b, uint64(p.Sport), 10)
		b = append(b, `,"dport":`...)
		b = strconv.AppendUint(b, uint64(p.Dport), 10)
	}
	if p.Proto == "icmp" || p.Proto == "icmp6" {
		b = append(b, `,"icmp_type":`...)
		b = strconv.AppendUint(b, uint64(p.ICMPType), 10)
		b = append(b, `,"icmp_code":`...)
		b = strconv.AppendUint(b, uint64(p.ICMPCode), 10)
	}
	if p.Proto == "tcp" {
		b = append(b, `,"tcp_flags":"`...)
		b = appendTCPFlags(b, p.TCPFlags)
		b = append(b, '"')
	}
	b = append(b, `,"cpu":`...)
	b = strconv.AppendUint(b, uint64(e.CPU), 10)
	if e.Skb != 0 {
		b = append(b, `,"skb":"0x`...)
		b = appendHex(b, e.Skb)
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	r.buf = b
	_, err := r.w.Write(b)
	return err
}

// Summary implements Renderer.
func (r *NDJSON) Summary(s *tracer.Summary) error {
	b := r.buf[:0]
	b = append(b, `{"type":"summary","start":"`...)
	b = r.ts.appendRFC3339(b, s.Start)
	b = append(b, `","end":"`...)
	b = r.ts.appendRFC3339(b, s.End)
	b = append(b, `","events":`...)
	b = strconv.AppendUint(b, s.Events, 10)
	b = append(b, `,"drops":`...)
	b = strconv.AppendUint(b, s.Drops, 10)
	b = append(b, `,"consumed":`...)
	b = strconv.AppendUint(b, s.Consumed, 10)
	b = append(b, `,"by_reason":`...)
	b = appendCounts(b, tracer.Sorted(s.ByReason))
	b = append(b, `,"by_location":`...)
	b = appendCounts(b, tracer.Sorted(s.ByLocation))
	b = append(b, `,"by_hook":`...)
	b = appendCounts(b, tracer.Sorted(s.ByHook))
	b = append(b, `,"lost":`...)
	b = appendCounts(b, s.Lost)
	b = append(b, `,"sources":[`...)
	for i, src := range s.Sources {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, src.Name)
		b = append(b, `,"running":`...)
		b = strconv.AppendBool(b, src.Running)
		if src.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, src.Reason)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	r.buf = b
	if _, err := r.w.Write(b); err != nil {
		return err
	}
	return r.w.Flush()
}

// Flush implements Renderer.
func (r *NDJSON) Flush() error { return r.w.Flush() }

func appendCounts(b []byte, cs []tracer.Counter) []byte {
	b = append(b, '{')
	for i, c := range cs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, c.Name)
		b = append(b, ':')
		b = strconv.AppendUint(b, c.Value, 10)
	}
	return append(b, '}')
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
	sec    int64
	prefix []byte // "2006-01-02T15:04:05"
}

func (c *timeCache) appendRFC3339(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := t.Unix()
	if c.prefix == nil || sec != c.sec {
		c.sec = sec
		c.prefix = appendDateTime(c.prefix[:0], t)
	}
	b = append(b, c.prefix...)
	ns := t.Nanosecond()
	var d [10]byte
	d[0] = '.'
	for i := 9; i >= 1; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	b = append(b, d[:]...)
	return append(b, 'Z')
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
