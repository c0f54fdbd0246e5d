package report

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/pcapfilter"
	"github.com/pktfate/pktfate/internal/ringrec"
)

// readRaw decodes a raw capture (trace --output-raw) as the live trace
// would have: the ebpf source's decoding (ringrec.Stream), then the
// user-space filters the trace was given; the loss counters come from
// the capture's trailer.
func readRaw(r *bufio.Reader, opt Options) (*Result, error) {
	rr, err := ringrec.NewRawReader(r)
	if err != nil {
		return nil, err
	}
	h := rr.Header
	if opt.Home != nil && h.HomeNetns != 0 {
		opt.Home(h.HomeNetns)
	}
	filter, err := pcapfilter.Compile(h.Filter)
	if err != nil {
		return nil, fmt.Errorf("the capture's filter expression %q: %w", h.Filter, err)
	}
	reasons := map[string]bool{}
	for _, n := range h.FilterReasons {
		reasons[n] = true
	}
	res := &Result{Format: "raw", Schema: -1}
	b := newBuilder()
	st := ringrec.Stream{Decoder: rr.Decoder()}
	var ev fate.Event
	var noBytes, byIif, copies uint64
	for {
		raw, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, ringrec.ErrRawCut) {
			break // no trailer: Result.HasSummary stays false
		}
		if err != nil {
			res.Damage = append(res.Damage, Damage{Offset: rr.Offset(), Why: err.Error()})
			break
		}
		if !st.Next(raw, &ev) {
			continue
		}
		if ev.Ifname == "" && ev.Ifindex != 0 {
			ev.Ifname = rr.Ifname(ev.Netns, ev.Ifindex)
		}
		if ev.NetnsFrom == fate.NetnsGuessed {
			byIif++
		}
		if ev.CopyReleased() {
			copies++
			continue
		}
		if !ev.KernelFiltered && h.Filter != "" {
			if len(ev.Data) == 0 && ev.Len > 0 {
				noBytes++ // whether it matches is not known: lost, and counted
				continue
			}
			if !filter.Match(ev.EtherType, ev.Data, ev.MACHeader) {
				continue
			}
		}
		if len(reasons) > 0 && (ev.Fate != fate.FateDrop || !reasons[ev.Reason]) {
			continue
		}
		res.Records++
		b.event(&ev)
		if opt.Records != nil {
			if err := opt.Records(Record{Event: ev.Clone()}); err != nil {
				return nil, errStop{err}
			}
		}
	}
	var final *fate.Summary
	if t := rr.Trailer; t != nil {
		res.HasSummary = true
		final = &fate.Summary{Start: t.Start, End: t.End, Events: b.events.Events, Unknowns: t.Unknowns, Notes: t.Notes,
			Sources: t.Sources, Ignored: map[string]uint64{}, Lost: slices.Clone(t.Lost)}
		for k, v := range t.Ignored {
			final.Ignored[k] = v
		}
		// What the trace left to its reader: decoding, the frees after a
		// read, the filters.
		addLoss(final, fate.ObserverEBPF, "decode_errors", st.DecodeErrors.Load())
		if h.Filter != "" {
			addLoss(final, fate.ObserverEBPF, "filter_no_bytes", noBytes)
		}
		for k, v := range map[string]uint64{"ebpf_freed_after_read": st.FreedAfterRead.Load(), "ebpf_netns_by_iif": byIif, "copies_released": copies} {
			if v > 0 {
				final.Ignored[k] += v
			}
		}
		if t.Records != rr.Records() {
			res.Damage = append(res.Damage, Damage{Offset: rr.Offset(), Why: fmt.Sprintf("the trailer counts %d records, the file holds %d", t.Records, rr.Records())})
		}
	}
	res.Summary = b.finish(final)
	return res, nil
}

// addLoss adds v to the loss counter observer/name, or appends it.
func addLoss(s *fate.Summary, observer, name string, v uint64) {
	for i := range s.Lost {
		if s.Lost[i].Observer == observer && s.Lost[i].Name == name {
			s.Lost[i].Value += v
			return
		}
	}
	s.Lost = append(s.Lost, fate.Loss{Observer: observer, Name: name, Value: v})
}
