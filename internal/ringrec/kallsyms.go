package ringrec

import (
	"bytes"
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
	table
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

// table is the symbols sorted by address. The names live in one string
// (names[start[i]:end[i]]): two allocations for some 120,000 symbols,
// and no pointer for the garbage collector to follow per name.
type table struct {
	addrs      []uint64
	start, end []uint32
	names      string
}

func (t *table) name(i int) string { return t.names[t.start[i]:t.end[i]] }

// symbolsLoad is a table loading in the background, shared by forks.
type symbolsLoad struct {
	done chan struct{}
	table
	err error
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
		l.table = t.table
	}()
	return &Symbols{cache: map[uint64]string{}, pending: l}
}

// wait takes the table once it has loaded.
func (s *Symbols) wait() {
	if s.pending == nil || s.loaded {
		return
	}
	<-s.pending.done
	s.table = s.pending.table
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
	return &Symbols{table: s.table, cache: map[uint64]string{}}
}

// LoadKallsyms reads /proc/kallsyms. Without CAP_SYSLOG (or with
// kernel.kptr_restrict=2) every address reads as zero; that is reported as
// an error because locations could not be named.
func LoadKallsyms() (*Symbols, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("reading kernel symbols: %w", err)
	}
	defer f.Close()
	s, err := ParseKallsyms(f)
	if err != nil {
		return nil, fmt.Errorf("reading /proc/kallsyms: %w", err)
	}
	return s, nil
}

// kallsymsChunk is how much of the file is read at a time: the lines are
// parsed as they come, so the file (5 MB and more) is never held whole.
const kallsymsChunk = 256 << 10

// ParseKallsyms parses the /proc/kallsyms format: "address type name [module]".
// Only text symbols (t, T, w, W) are kept. It reads r in chunks and keeps
// only the names, in one string: no per-line allocation, and none of the
// copies that reading the whole file first costs (a fresh pktfate spent
// most of its start there on a one-CPU machine).
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	p := kallsymsParser{line: 1, sorted: true}
	buf := make([]byte, kallsymsChunk)
	have := 0
	for {
		n, err := r.Read(buf[have:])
		have += n
		done := 0
		for {
			nl := bytes.IndexByte(buf[done:have], '\n')
			if nl < 0 {
				break
			}
			if err := p.add(buf[done : done+nl]); err != nil {
				return nil, err
			}
			done += nl + 1
		}
		have = copy(buf, buf[done:have])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if have == len(buf) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", p.line, len(buf))
		}
	}
	if have > 0 { // a last line without its newline
		if err := p.add(buf[:have]); err != nil {
			return nil, err
		}
	}
	return p.finish()
}

// kallsymsParser builds a table line by line.
type kallsymsParser struct {
	t               table
	arena           strings.Builder
	line            int
	nonZero, sorted bool
}

// add parses one line: "ffffffff81000000 T _stext" or
// "... t nft_do_chain\t[nf_tables]".
func (p *kallsymsParser) add(l []byte) error {
	line := p.line
	p.line++
	sp := bytes.IndexByte(l, ' ')
	if sp <= 0 || len(l) < sp+4 || l[sp+2] != ' ' {
		return fmt.Errorf("line %d: want \"address type name\", got %q", line, l)
	}
	typ := l[sp+1]
	name := bytes.TrimSpace(l[sp+3:])
	if len(name) == 0 {
		return fmt.Errorf("line %d: want \"address type name\", got %q", line, l)
	}
	addr, ok := parseHex(l[:sp])
	if !ok {
		return fmt.Errorf("line %d: bad address %q", line, l[:sp])
	}
	if addr != 0 {
		p.nonZero = true
	}
	switch typ {
	case 't', 'T', 'w', 'W':
	default:
		return nil
	}
	t := &p.t
	if n := len(t.addrs); n > 0 && t.addrs[n-1] > addr {
		p.sorted = false
	}
	// Grow by doubling: append grows a large slice by a quarter, which
	// copies a 120,000-symbol table some twenty times over.
	if len(t.addrs) == cap(t.addrs) {
		c := max(2*cap(t.addrs), 1024)
		t.addrs = slices.Grow(t.addrs, c-len(t.addrs))
		t.start = slices.Grow(t.start, c-len(t.start))
		t.end = slices.Grow(t.end, c-len(t.end))
	}
	if p.arena.Cap()-p.arena.Len() < len(name)+1 {
		p.arena.Grow(max(p.arena.Cap(), 64<<10, len(name)+1))
	}
	t.addrs = append(t.addrs, addr)
	t.start = append(t.start, uint32(p.arena.Len()))
	if i := bytes.IndexAny(name, " \t"); i >= 0 {
		// "name [module]": one space between them, as Format prints.
		p.arena.Write(name[:i])
		p.arena.WriteByte(' ')
		p.arena.Write(bytes.TrimSpace(name[i+1:]))
	} else {
		p.arena.Write(name)
	}
	t.end = append(t.end, uint32(p.arena.Len()))
	return nil
}

func (p *kallsymsParser) finish() (*Symbols, error) {
	t := p.t
	if len(t.addrs) > 0 && !p.nonZero {
		return nil, fmt.Errorf("all addresses are zero: run as root (CAP_SYSLOG) or lower kernel.kptr_restrict")
	}
	t.names = p.arena.String()
	if !p.sorted {
		// Stable: of several names at one address the first listed wins.
		idx := make([]int, len(t.addrs))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(t.addrs[a], t.addrs[b]) })
		s := table{addrs: make([]uint64, len(idx)), start: make([]uint32, len(idx)), end: make([]uint32, len(idx)), names: t.names}
		for i, j := range idx {
			s.addrs[i], s.start[i], s.end[i] = t.addrs[j], t.start[j], t.end[j]
		}
		t = s
	}
	return &Symbols{table: t, cache: map[uint64]string{}}, nil
}

// parseHex parses a kernel address of at most 16 hex digits.
func parseHex(h []byte) (uint64, bool) {
	if len(h) == 0 || len(h) > 16 {
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
	return s.name(i), addr - s.addrs[i], true
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
