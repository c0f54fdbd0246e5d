package tracer

import (
	"bufio"
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
	return &Symbols{addrs: s.addrs, names: s.names, cache: map[uint64]string{}}
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

// ParseKallsyms parses the /proc/kallsyms format: "address type name [module]".
// Only text symbols (t, T, w, W) are kept.
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	type sym struct {
		addr uint64
		name string
	}
	var syms []sym
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	nonZero := false
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d: want \"address type name\", got %q", line, sc.Text())
		}
		switch f[1] {
		case "t", "T", "w", "W":
		default:
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad address %q", line, f[0])
		}
		if addr != 0 {
			nonZero = true
		}
		name := f[2]
		if len(f) > 3 {
			name += " " + f[3] // "[module]"
		}
		syms = append(syms, sym{addr, name})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(syms) > 0 && !nonZero {
		return nil, fmt.Errorf("all addresses are zero: run as root (CAP_SYSLOG) or lower kernel.kptr_restrict")
	}
	slices.SortStableFunc(syms, func(a, b sym) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	s := &Symbols{cache: map[uint64]string{}}
	for _, x := range syms {
		s.addrs = append(s.addrs, x.addr)
		s.names = append(s.names, x.name)
	}
	return s, nil
}

// Lookup returns the symbol containing addr and the offset into it.
func (s *Symbols) Lookup(addr uint64) (name string, off uint64, ok bool) {
	if s == nil || addr == 0 {
		return "", 0, false
	}
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
