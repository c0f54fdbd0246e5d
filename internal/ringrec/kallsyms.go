package ringrec

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Symbols resolves kernel text addresses to "func+0xoff" using a snapshot of
// /proc/kallsyms. Not safe for concurrent use (it caches results): give
// each goroutine its own Fork.
type Symbols struct {
	addrs []uint64
	names []string
	cache map[uint64]string
	// pending, when set, is a table loading (LoadKallsymsAsync): the
	// first lookup waits for it. It is never changed after construction,
	// so Ready and Err may be asked from another goroutine while this one
	// looks up; loaded says this goroutine has taken the table.
	pending *symbolsLoad
	loaded  bool
	// fixed, when set, names the locations instead of a table: a raw
	// capture's (RawReader), one formatted name per address.
	fixed map[uint64]string
}

// symbolsLoad is a table loading in the background, shared by forks.
type symbolsLoad struct {
	done  chan struct{}
	addrs []uint64
	names []string
	err   error
}

// LoadKallsymsAsync starts reading /proc/kallsyms and returns at once:
// reading it costs the kernel a tenth of a second or more, which need not
// delay attaching. Lookups wait until the table is there; Err tells
// whether it could be read.
func LoadKallsymsAsync() *Symbols {
	l := &symbolsLoad{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t, err := LoadKallsyms()
		if err != nil {
			l.err = err
			return
		}
		l.addrs, l.names = t.addrs, t.names
	}()
	return &Symbols{cache: map[uint64]string{}, pending: l}
}

// wait takes the table once it has loaded.
func (s *Symbols) wait() {
	if s.pending == nil || s.loaded {
		return
	}
	<-s.pending.done
	s.addrs, s.names = s.pending.addrs, s.pending.names
	s.loaded = true
}

// Err waits for a table that is loading and returns why it could not be
// read (locations are then printed as addresses), or nil.
func (s *Symbols) Err() error {
	if s == nil {
		return errors.New("no kernel symbols")
	}
	if l := s.pending; l != nil {
		<-l.done
		return l.err
	}
	return nil
}

// Ready reports whether the table has loaded (Err then does not wait).
func (s *Symbols) Ready() bool {
	if s == nil || s.pending == nil {
		return true
	}
	select {
	case <-s.pending.done:
		return true
	default:
		return false
	}
}

// symbolCacheMax bounds the cache of formatted locations: a long capture
// meets new addresses for as long as it runs.
const symbolCacheMax = 4096

// Fork returns Symbols that share the table (read-only) and have a cache
// of their own, for use on another goroutine.
func (s *Symbols) Fork() *Symbols {
	if s == nil {
		return nil
	}
	if s.fixed != nil {
		return &Symbols{fixed: s.fixed}
	}
	if s.pending != nil {
		// The fork takes the table from the load itself: s may be
		// taking it on another goroutine right now.
		return &Symbols{cache: map[uint64]string{}, pending: s.pending}
	}
	return &Symbols{addrs: s.addrs, names: s.names, cache: map[uint64]string{}}
}

// LoadKallsyms reads /proc/kallsyms. Without CAP_SYSLOG (or with
// kernel.kptr_restrict=2) every address reads as zero; that is reported as
// an error because locations could not be named.
func LoadKallsyms() (*Symbols, error) {
	b, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("reading kernel symbols: %w", err)
	}
	s, err := parseKallsyms(b)
	if err != nil {
		return nil, fmt.Errorf("reading /proc/kallsyms: %w", err)
	}
	return s, nil
}

// ParseKallsyms parses the /proc/kallsyms format: "address type name [module]".
// Only text symbols (t, T, w, W) are kept.
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return parseKallsyms(b)
}

// parseKallsyms parses the whole file at once: one string for every name
// (each a slice of it), no per-line allocation. A kernel has some 120,000
// symbols; this runs in a few milliseconds where a line scanner with
// strings.Fields took a fifth of a second of pktfate's start.
func parseKallsyms(b []byte) (*Symbols, error) {
	text := string(b)
	s := &Symbols{cache: map[uint64]string{}}
	nonZero, sorted := false, true
	for line, rest := 1, text; rest != ""; line++ {
		l, next, _ := strings.Cut(rest, "\n")
		rest = next
		// "ffffffff81000000 T _stext" or "... t nft_do_chain\t[nf_tables]"
		sp := strings.IndexByte(l, ' ')
		if sp <= 0 || len(l) < sp+4 || l[sp+2] != ' ' {
			return nil, fmt.Errorf("line %d: want \"address type name\", got %q", line, l)
		}
		typ := l[sp+1]
		name := strings.TrimSpace(l[sp+3:])
		if name == "" {
			return nil, fmt.Errorf("line %d: want \"address type name\", got %q", line, l)
		}
		addr, ok := parseHex(l[:sp])
		if !ok {
			return nil, fmt.Errorf("line %d: bad address %q", line, l[:sp])
		}
		if addr != 0 {
			nonZero = true
		}
		switch typ {
		case 't', 'T', 'w', 'W':
		default:
			continue
		}
		if i := strings.IndexAny(name, " \t"); i >= 0 {
			// "name [module]": one space between them, as Format prints.
			name = name[:i] + " " + strings.TrimSpace(name[i+1:])
		}
		if n := len(s.addrs); n > 0 && s.addrs[n-1] > addr {
			sorted = false
		}
		s.addrs = append(s.addrs, addr)
		s.names = append(s.names, name)
	}
	if len(s.addrs) > 0 && !nonZero {
		return nil, fmt.Errorf("all addresses are zero: run as root (CAP_SYSLOG) or lower kernel.kptr_restrict")
	}
	if !sorted {
		// Stable: of several names at one address the first listed wins.
		idx := make([]int, len(s.addrs))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(s.addrs[a], s.addrs[b]) })
		addrs, names := make([]uint64, len(idx)), make([]string, len(idx))
		for i, j := range idx {
			addrs[i], names[i] = s.addrs[j], s.names[j]
		}
		s.addrs, s.names = addrs, names
	}
	return s, nil
}

// parseHex parses a kernel address of at most 16 hex digits.
func parseHex(h string) (uint64, bool) {
	if h == "" || len(h) > 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// Lookup returns the symbol containing addr and the offset into it.
func (s *Symbols) Lookup(addr uint64) (name string, off uint64, ok bool) {
	if s == nil || addr == 0 {
		return "", 0, false
	}
	s.wait()
	i, found := slices.BinarySearch(s.addrs, addr)
	if !found {
		i--
	}
	if i < 0 {
		return "", 0, false
	}
	// Several names may share an address; report the first one.
	for i > 0 && s.addrs[i-1] == s.addrs[i] {
		i--
	}
	return s.names[i], addr - s.addrs[i], true
}

// Format returns "func+0xoff" for addr, or its hex value when it is in no
// known symbol. Results are cached: locations repeat.
func (s *Symbols) Format(addr uint64) string {
	if addr == 0 {
		return ""
	}
	if s != nil && s.fixed != nil {
		if v, ok := s.fixed[addr]; ok {
			return v
		}
		return "0x" + strconv.FormatUint(addr, 16)
	}
	if s != nil {
		if v, ok := s.cache[addr]; ok {
			return v
		}
	}
	var v string
	if name, off, ok := s.Lookup(addr); ok {
		fn, mod, _ := strings.Cut(name, " ")
		v = fn + "+0x" + strconv.FormatUint(off, 16)
		if mod != "" {
			v += " " + mod
		}
	} else {
		v = "0x" + strconv.FormatUint(addr, 16)
	}
	if s != nil {
		if len(s.cache) >= symbolCacheMax {
			clear(s.cache)
		}
		s.cache[addr] = v
	}
	return v
}
