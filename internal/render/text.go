package render

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pktfate/pktfate/fate"
)

// Text writes one aligned line per event and the summary as tables.
type Text struct {
	w          *bufio.Writer
	header     bool
	fateHeader bool
	buf        []byte
	// Local prints times in the local time zone (default UTC).
	Local bool
}

// NewText returns a text renderer writing to w.
func NewText(w io.Writer) *Text {
	return &Text{w: bufio.NewWriterSize(w, 32<<10), buf: make([]byte, 0, 256)}
}

const textLayout = "%-15s %-7s %-7s %-20s %-34s %-12s %-10s %-10s %s\n"

// Event implements Renderer.
func (r *Text) Event(e *fate.Event) error {
	if !r.header {
		r.header = true
		if _, err := fmt.Fprintf(r.w, textLayout, "TIME", "SOURCE", "FATE", "REASON", "LOCATION", "HOOK", "IFACE", "NETNS", "PACKET"); err != nil {
			return err
		}
	}
	t := e.Time.UTC()
	if r.Local {
		t = e.Time.Local()
	}
	reason := e.Reason
	if reason == "" {
		reason = "-"
	}
	iface := e.Ifname
	if iface == "" && e.Ifindex != 0 {
		iface = "if" + strconv.FormatUint(uint64(e.Ifindex), 10)
	}
	if iface == "" {
		iface = "-"
	}
	iface = printable(iface)
	netns := "-"
	if e.Netns != 0 {
		netns = strconv.FormatUint(uint64(e.Netns), 10)
	}
	loc := e.Location
	if loc == "" {
		loc = "-"
	}
	hook := e.Hook
	if hook == "" {
		hook = "-"
	}
	_, err := fmt.Fprintf(r.w, textLayout, t.Format("15:04:05.000000"), e.Source, e.Fate, reason, loc, hook, iface, netns, PacketSummary(e))
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

const fateLayout = "%-15s %-11s %-7s %-20s %-34s %-12s %-10s %-10s %s  [%s]\n"

// Fate implements Renderer: one line per packet with the agreed fate, the
// verdict and the observers that saw it; conflicts follow on their own
// lines.
func (r *Text) Fate(f *fate.FateRecord) error {
	if !r.fateHeader {
		r.fateHeader = true
		if _, err := fmt.Fprintf(r.w, fateLayout, "TIME", "VERDICT", "FATE", "REASON", "LOCATION", "HOOK", "IFACE", "NETNS", "PACKET", "OBSERVERS"); err != nil {
			return err
		}
	}
	e := f.Event
	t := e.Time.UTC()
	if r.Local {
		t = e.Time.Local()
	}
	verdict := f.Verdict.String()
	if f.Late {
		verdict += "*"
	}
	_, err := fmt.Fprintf(r.w, fateLayout, t.Format("15:04:05.000000"), verdict, e.Fate, dash(e.Reason), dash(e.Location),
		dash(e.Hook), dash(ifaceName(e)), dash(netnsString(e.Netns)), PacketSummary(e), observerSummary(f))
	for _, c := range f.Conflicts {
		if err == nil {
			_, err = fmt.Fprintf(r.w, "%15s conflict: %s\n", "", c)
		}
	}
	return err
}

// observerSummary lists who saw the packet and who should have
// ("ebpf+dropmon saw; kmod missed").
func observerSummary(f *fate.FateRecord) string {
	var saw, other []string
	for _, o := range f.Observers {
		switch o.Status {
		case fate.StatusSaw:
			saw = append(saw, o.Name)
		case fate.StatusMissed, fate.StatusLost:
			other = append(other, o.Name+" "+o.Status.String())
		}
	}
	s := strings.Join(saw, "+")
	if len(other) > 0 {
		s += "; " + strings.Join(other, ", ")
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func netnsString(n uint32) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(n), 10)
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
	for _, src := range s.Sources {
		if src.Running {
			fmt.Fprintf(w, "source %s: running\n", src.Name)
		} else {
			fmt.Fprintf(w, "source %s: not running: %s\n", src.Name, src.Reason)
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
