package render

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pktfate/pktfate/fate"
)

// Text writes one line per event (or per packet's fate record) and the
// summary as tables. The default line is made to fit 120 columns for a
// typical IPv4 packet: the time, the fate, the packet, the reason, the
// location's function, and the interface (with "@namespace" when the packet was in
// another namespace than the home one); the netfilter hook follows only
// where there is one, and the observers only where one missed the packet.
// Wide adds every column.
type Text struct {
	w          *bufio.Writer
	header     bool
	fateHeader bool
	buf        []byte

	// Location is the time zone of the times printed (nil: time.Local).
	Location *time.Location
	// Wide prints every column: the date, the source, the hook's family
	// and verdict, the interface index, the namespace's inode, the mark.
	Wide bool
	// NetnsName names the network namespace with an inode ("" when it has
	// no name); nil prints inode numbers.
	NetnsName func(inode uint32) string
	// HomeNetns is the namespace a default line does not name (the one
	// traced, or pktfate's own): packets elsewhere show "iface@namespace".
	HomeNetns uint32
}

// NewText returns a text renderer writing to w, in local time.
func NewText(w io.Writer) *Text {
	return &Text{w: bufio.NewWriterSize(w, 32<<10), buf: make([]byte, 0, 256)}
}

// Column widths of the default line: 15+1+7+1+40+1+14+1+16+1 = 97 columns
// before the interface. The default line names the location's function
// (its offset is in wide lines, NDJSON and the summary).
const (
	wTime     = 15
	wFate     = 7
	wPacket   = 40
	wReason   = 14
	wLocation = 16
	// Wide.
	wWideTime   = 29
	wSource     = 7
	wVerdict    = 11
	wWidePacket = 48
	wWideReason = 20
	wWideLoc    = 34
	wHook       = 22
	wIface      = 14
	wNetns      = 24
	wMark       = 10
)

func (r *Text) loc() *time.Location {
	if r.Location != nil {
		return r.Location
	}
	return time.Local
}

// timeTitle labels the time column with its zone when it is not local.
func (r *Text) timeTitle() string {
	if r.Location != nil && r.Location != time.Local {
		return "TIME(" + r.Location.String() + ")"
	}
	return "TIME"
}

// pad appends s and spaces up to width, and one space; a longer s pushes
// the rest of the line along.
func pad(b []byte, s string, width int) []byte {
	b = append(b, s...)
	for n := utf8.RuneCountInString(s); n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

func (r *Text) appendTime(b []byte, t time.Time, width int) []byte {
	t = t.In(r.loc())
	n := len(b)
	if r.Wide {
		b = t.AppendFormat(b, "2006-01-02 15:04:05.000000000")
	} else {
		b = t.AppendFormat(b, "15:04:05.000000")
	}
	for len(b)-n < width {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

// where is the interface, and the namespace when it is not the home one
// ("veth0@blue").
func (r *Text) where(e *fate.Event) string {
	s := dash(ifaceName(e))
	if e.NetnsFrom == fate.NetnsGuessed {
		return s + "@" + r.netnsName(e.Netns) + "?" // placed by its interface: a guess
	}
	if e.Netns != 0 && e.Netns != r.HomeNetns {
		s += "@" + r.netnsName(e.Netns)
	}
	return s
}

// netnsName is the namespace's name, or its inode number.
func (r *Text) netnsName(ino uint32) string {
	if r.NetnsName != nil {
		if n := r.NetnsName(ino); n != "" {
			return printable(n)
		}
	}
	return strconv.FormatUint(uint64(ino), 10)
}

// hookText is the hook part of a default line ("LOCAL_IN"), with its
// family when the packet's own protocol does not say it, and the
// netfilter verdict when it is not a drop ("PRE_ROUTING stolen").
func hookText(e *fate.Event) string {
	if e.Hook == "" {
		return ""
	}
	s := e.Hook
	if !familyImplied(e) {
		s = e.Family + " " + s
	}
	if e.Verdict != "" && e.Verdict != "drop" {
		s += " " + e.Verdict
	}
	return s
}

// familyImplied reports whether the packet's addresses already say the
// hook's family (an IPv4 packet in an ipv4 hook).
func familyImplied(e *fate.Event) bool {
	switch e.Family {
	case "":
		return true
	case "ipv4":
		return e.Packet.Src.Is4()
	case "ipv6":
		return e.Packet.Src.Is6()
	}
	return false
}

// wideHook is the hook column of a wide line ("ipv4 LOCAL_IN drop").
func wideHook(e *fate.Event) string {
	if e.Hook == "" {
		return "-"
	}
	return strings.TrimSpace(e.Family + " " + e.Hook + " " + e.Verdict)
}

// wideIface is the interface with its index ("eth0#2").
func wideIface(e *fate.Event) string {
	s := dash(ifaceName(e))
	if e.Ifname != "" && e.Ifindex != 0 {
		s += "#" + strconv.FormatUint(uint64(e.Ifindex), 10)
	}
	return s
}

// wideNetns is the namespace's inode and name ("4026532246:blue").
func (r *Text) wideNetns(ino uint32) string {
	if ino == 0 {
		return "-"
	}
	s := strconv.FormatUint(uint64(ino), 10)
	if r.NetnsName != nil {
		if n := r.NetnsName(ino); n != "" {
			s += ":" + printable(n)
		}
	}
	return s
}

func (r *Text) writeHeader(verdict bool) error {
	b := r.buf[:0]
	if r.Wide {
		b = pad(b, r.timeTitle(), wWideTime)
		b = pad(b, "FATE", wFate)
		if verdict {
			b = pad(b, "VERDICT", wVerdict)
		} else {
			b = pad(b, "SOURCE", wSource)
		}
		b = pad(b, "PACKET", wWidePacket)
		b = pad(b, "REASON", wWideReason)
		b = pad(b, "LOCATION", wWideLoc)
		b = pad(b, "HOOK", wHook)
		b = pad(b, "IFACE", wIface)
		b = pad(b, "NETNS", wNetns)
		b = pad(b, "MARK", wMark)
		if verdict {
			b = append(b, "OBSERVERS"...)
		}
	} else {
		b = pad(b, r.timeTitle(), wTime)
		b = pad(b, "FATE", wFate)
		b = pad(b, "PACKET", wPacket)
		b = pad(b, "REASON", wReason)
		b = pad(b, "LOCATION", wLocation)
		b = append(b, "IFACE"...)
	}
	b = append(bytes.TrimRight(b, " "), '\n')
	r.buf = b
	_, err := r.w.Write(b)
	return err
}

// appendLine appends one event's columns; verdict is "" for a lone
// event (its source is shown in wide lines instead).
func (r *Text) appendLine(b []byte, e *fate.Event, verdict string) []byte {
	if r.Wide {
		b = r.appendTime(b, e.Time, wWideTime)
		b = pad(b, e.Fate.String(), wFate)
		if verdict != "" {
			b = pad(b, verdict, wVerdict)
		} else {
			b = pad(b, e.Source, wSource)
		}
		b = pad(b, PacketSummary(e), wWidePacket)
		b = pad(b, dash(e.Reason), wWideReason)
		b = pad(b, dash(e.Location), wWideLoc)
		b = pad(b, wideHook(e), wHook)
		b = pad(b, wideIface(e), wIface)
		n := r.wideNetns(e.Netns)
		if e.NetnsFrom == fate.NetnsGuessed {
			n += "?"
		}
		b = pad(b, n, wNetns)
		b = pad(b, "0x"+strconv.FormatUint(uint64(e.Mark), 16), wMark)
		return b
	}
	b = r.appendTime(b, e.Time, wTime)
	b = pad(b, e.Fate.String(), wFate)
	b = pad(b, PacketSummary(e), wPacket)
	b = pad(b, dash(e.Reason), wReason)
	b = pad(b, dash(fate.Function(e.Location)), wLocation)
	b = append(b, r.where(e)...)
	if h := hookText(e); h != "" {
		b = append(b, "  "...)
		b = append(b, h...)
	}
	return b
}

// Event implements Renderer.
func (r *Text) Event(e *fate.Event) error {
	if !r.header {
		r.header = true
		if err := r.writeHeader(false); err != nil {
			return err
		}
	}
	b := r.appendLine(r.buf[:0], e, "")
	b = append(bytes.TrimRight(b, " "), '\n')
	r.buf = b
	_, err := r.w.Write(b)
	return err
}

// printable returns s, or s quoted when it holds anything a terminal would
// interpret or mangle: interface names are arbitrary bytes (ESC, invalid
// UTF-8, control characters) chosen by whoever created the interface.
func printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// Fate implements Renderer: one line per packet with the agreed fate. A
// default line says the verdict only when it is news (unconfirmed: an
// observer that should have seen the packet did not; conflict; late),
// and which observers missed or lost it; a wide line has the verdict and
// the observers always. Conflicts follow on their own lines.
func (r *Text) Fate(f *fate.FateRecord) error {
	if !r.fateHeader {
		r.fateHeader = true
		if err := r.writeHeader(true); err != nil {
			return err
		}
	}
	e := f.Event
	verdict := f.Verdict.String()
	if f.Late {
		verdict += "*"
	}
	b := r.appendLine(r.buf[:0], e, verdict)
	width := wTime
	if r.Wide {
		width = wWideTime
		b = append(b, observerSummary(f)...)
	} else if note := fateNote(f); note != "" {
		b = append(b, "  "...)
		b = append(b, note...)
	}
	b = append(bytes.TrimRight(b, " "), '\n')
	r.buf = b
	_, err := r.w.Write(b)
	for _, c := range f.Conflicts {
		if err == nil {
			_, err = fmt.Fprintf(r.w, "%*s conflict: %s\n", width, "", c)
		}
	}
	return err
}

// fateNote is what a default line adds to a record whose verdict is news:
// "unconfirmed: kmod missed", "conflict", "late".
func fateNote(f *fate.FateRecord) string {
	var parts []string
	switch f.Verdict {
	case fate.VerdictUnconfirmed, fate.VerdictConflict:
		parts = append(parts, f.Verdict.String())
	}
	if f.Late {
		parts = append(parts, "late")
	}
	s := strings.Join(parts, ", ")
	if m := missedSummary(f); m != "" && s != "" {
		s += ": " + m
	} else if m != "" {
		s = m
	}
	return s
}

// observerSummary lists who saw the packet and who should have
// ("ebpf+dropmon saw; kmod missed").
func observerSummary(f *fate.FateRecord) string {
	var saw []string
	for _, o := range f.Observers {
		if o.Status == fate.StatusSaw {
			saw = append(saw, o.Name)
		}
	}
	s := strings.Join(saw, "+")
	if m := missedSummary(f); m != "" {
		s += "; " + m
	}
	return s
}

// missedSummary lists the observers that missed or lost the packet
// ("kmod missed, dropmon lost").
func missedSummary(f *fate.FateRecord) string {
	var other []string
	for _, o := range f.Observers {
		switch o.Status {
		case fate.StatusMissed, fate.StatusLost:
			other = append(other, o.Name+" "+o.Status.String())
		}
	}
	return strings.Join(other, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ifaceName(e *fate.Event) string {
	if e.Ifname != "" {
		return printable(e.Ifname)
	}
	if e.Ifindex != 0 {
		return "if" + strconv.FormatUint(uint64(e.Ifindex), 10)
	}
	return ""
}

// PacketSummary describes the decoded headers in one tcpdump-like phrase:
// "UDP 10.0.0.1:40000 > 10.0.0.2:9 len 7".
func PacketSummary(e *fate.Event) string {
	p := &e.Packet
	var b strings.Builder
	switch p.Proto {
	case "udp", "tcp":
		b.WriteString(strings.ToUpper(p.Proto))
		b.WriteByte(' ')
		b.WriteString(netip.AddrPortFrom(p.Src, p.Sport).String())
		b.WriteString(" > ")
		b.WriteString(netip.AddrPortFrom(p.Dst, p.Dport).String())
		if p.Proto == "tcp" {
			b.WriteString(" [")
			b.Write(appendTCPFlags(nil, p.TCPFlags))
			b.WriteByte(']')
		}
		b.WriteString(" len ")
		b.WriteString(strconv.Itoa(p.PayloadLen))
	case "icmp", "icmp6":
		fmt.Fprintf(&b, "%s %s > %s type %d code %d", strings.ToUpper(p.Proto), p.Src, p.Dst, p.ICMPType, p.ICMPCode)
	case "ipv4", "ipv6", "arp":
		fmt.Fprintf(&b, "%s %s > %s", strings.ToUpper(p.Proto), p.Src, p.Dst)
	default:
		if e.EtherType != 0 {
			fmt.Fprintf(&b, "ethertype 0x%04x len %d", e.EtherType, e.Len)
		} else {
			fmt.Fprintf(&b, "len %d", e.Len)
		}
	}
	return b.String()
}

// Summary implements Renderer.
func (r *Text) Summary(s *fate.Summary) error {
	w := r.w
	dur := s.End.Sub(s.Start).Round(1e6)
	fmt.Fprintf(w, "\n%d events in %s: %d dropped, %d consumed\n", s.Events, dur, s.Drops, s.Consumed)
	var running []string
	for _, src := range s.Sources {
		if src.Running {
			running = append(running, src.Name)
		}
	}
	if len(running) > 0 {
		fmt.Fprintf(w, "sources: %s\n", strings.Join(running, ", "))
	}
	for _, src := range s.Sources {
		if !src.Running {
			why := ShortReason(src.Reason)
			if r.Wide {
				why = src.Reason
			}
			fmt.Fprintf(w, "  %s not running: %s\n", src.Name, why)
		}
	}
	table(w, "drops by reason", fate.Sorted(s.ByReason))
	table(w, "drops by location", fate.Sorted(s.ByLocation))
	if len(s.ByHook) > 0 {
		table(w, "drops inside netfilter, by hook", fate.Sorted(s.ByHook))
	}
	if c := s.Correlation; c != nil {
		fmt.Fprintf(w, "\n%d packets seen by %s:\n", s.Fates, strings.Join(c.Observers, ", "))
		for _, v := range []string{"confirmed", "single", "unconfirmed", "conflict"} {
			fmt.Fprintf(w, "  %-12s %10d\n", v, c.ByVerdict[v])
		}
		if len(c.Pairs) > 0 {
			fmt.Fprintf(w, "\nagreement between observers:\n  %-20s %10s %10s\n", "observers", "both saw", "conflicts")
			for _, p := range c.Pairs {
				fmt.Fprintf(w, "  %-20s %10d %10d\n", p.A+" + "+p.B, p.BothSaw, p.Conflicts)
			}
		}
		for _, l := range fate.Sorted(c.LostBy) {
			if l.Value > 0 {
				fmt.Fprintf(w, "  %s lost about %d packets the others saw (from its loss counters' intervals)\n", l.Name, l.Value)
			}
		}
		if c.Late > 0 || c.Forced > 0 {
			fmt.Fprintf(w, "  (%d sightings arrived too late to be joined, %d packets reported early because the window was full)\n", c.Late, c.Forced)
		}
	}
	if len(s.Ignored) > 0 {
		table(w, "not shown (not a packet's fate)", fate.Sorted(s.Ignored))
	}
	if len(s.Notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n")
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	lossTable(w, s.Lost)
	switch s.Completeness() {
	case fate.Incomplete:
		fmt.Fprintf(w, "INCOMPLETE: %d events were lost; the capture does not prove every packet's fate\n", s.TotalLost())
	case fate.CompletenessUnknown:
		fmt.Fprintf(w, "completeness UNKNOWN: nothing counted was lost, but the capture cannot tell whether it is complete:\n")
		for _, why := range s.UnknownReasons() {
			fmt.Fprintf(w, "  %s\n", why)
		}
	default:
		fmt.Fprintf(w, "complete: nothing lost\n")
	}
	return w.Flush()
}

// lossTable lists every loss counter; one that could not be read shows
// "unknown", never a number.
func lossTable(w io.Writer, lost []fate.Loss) {
	fmt.Fprintf(w, "\nlost events:\n")
	if len(lost) == 0 {
		fmt.Fprintf(w, "  (none)\n")
		return
	}
	width := 0
	for _, l := range lost {
		width = max(width, len(l.Key()))
	}
	for _, l := range lost {
		if l.Unknown != "" {
			fmt.Fprintf(w, "  %-*s %10s\n", width, l.Key(), "unknown")
			continue
		}
		fmt.Fprintf(w, "  %-*s %10d\n", width, l.Key(), l.Value)
	}
}

func table(w io.Writer, title string, rows []fate.Counter) {
	fmt.Fprintf(w, "\n%s:\n", title)
	if len(rows) == 0 {
		fmt.Fprintf(w, "  (none)\n")
		return
	}
	width := 0
	for _, c := range rows {
		width = max(width, len(c.Name))
	}
	for _, c := range rows {
		fmt.Fprintf(w, "  %-*s %10d\n", width, c.Name, c.Value)
	}
}

// Flush implements Renderer.
func (r *Text) Flush() error { return r.w.Flush() }

// shortReasons gives the words for reasons whose first clause is jargon.
var shortReasons = []struct{ has, says string }{
	{"NET_DM\" not registered", "this kernel has no drop monitor (NET_DM)"},
	{"NET_DM not registered", "this kernel has no drop monitor (NET_DM)"},
	{"family pktfate not registered", "the pktfate kernel module is not loaded"},
}

// ShortReason is the gist of why a source does not run, in a few words:
// the first clause of the reason (up to its first ": "), or words for a
// reason known to start with jargon.
func ShortReason(reason string) string {
	for _, k := range shortReasons {
		if strings.Contains(reason, k.has) {
			return k.says
		}
	}
	first, _, _ := strings.Cut(reason, ": ")
	return first
}
