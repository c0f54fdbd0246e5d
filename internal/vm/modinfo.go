package vm

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Modinfo is what module loading order needs from a .ko's .modinfo section.
type Modinfo struct {
	Name    string
	Depends []string // hard dependencies (depends=), must load first
	SoftPre []string // soft pre-dependencies (softdep=pre:), loaded first when present
	Aliases []string // alias= values (softdeps often name an alias: "crc32c")
}

// parseModinfo decodes the NUL-separated key=value strings of a .modinfo
// section. Names are normalised ("-" to "_") as the kernel does.
func parseModinfo(section []byte) Modinfo {
	var mi Modinfo
	for _, kv := range bytes.Split(section, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = modName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, modName(d))
				}
			}
		case "alias":
			mi.Aliases = append(mi.Aliases, v)
		case "softdep":
			mi.SoftPre = append(mi.SoftPre, softPre(v)...)
		}
	}
	return mi
}

// softPre returns the module names after "pre:" in a softdep value such as
// "pre: crc32c post: foo" (modprobe.d syntax).
func softPre(v string) []string {
	var out []string
	inPre := false
	for _, f := range strings.Fields(v) {
		switch {
		case strings.HasSuffix(f, ":"):
			inPre = f == "pre:"
		case inPre:
			out = append(out, modName(f))
		}
	}
	return out
}

// modName normalises a module name or file name: no directory, no .ko
// suffix (compressed or not), dashes as underscores.
func modName(s string) string {
	s = filepath.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// readModinfo reads the .modinfo section of an uncompressed module image.
func readModinfo(ko []byte) (Modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return Modinfo{}, fmt.Errorf("parsing module elf: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Modinfo{}, errors.New("module has no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return Modinfo{}, fmt.Errorf("reading .modinfo: %w", err)
	}
	return parseModinfo(data), nil
}

// ModuleTree indexes the modules of one kernel's modules directory by
// normalised name and reads (and decompresses) them on demand.
type ModuleTree struct {
	paths map[string]string
	cache map[string][]byte
}

// OpenModuleTree indexes every .ko, .ko.xz and .ko.zst below dir.
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{paths: map[string]string{}, cache: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		if !d.IsDir() && (strings.HasSuffix(n, ".ko") || strings.HasSuffix(n, ".ko.xz") || strings.HasSuffix(n, ".ko.zst")) {
			t.paths[modName(n)] = path
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules in %s: %w", dir, err)
	}
	return t, nil
}

// Image returns the uncompressed module image of name.
func (t *ModuleTree) Image(name string) ([]byte, error) {
	if b, ok := t.cache[name]; ok {
		return b, nil
	}
	path, ok := t.paths[name]
	if !ok {
		return nil, fmt.Errorf("module %s: %w", name, os.ErrNotExist)
	}
	b, err := readMaybeCompressed(path)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", name, err)
	}
	t.cache[name] = b
	return b, nil
}

// Lookup returns the modinfo of name; ok is false when the kernel has no
// such loadable module (built in, or not built at all). A name that is no
// module's is tried as an alias (softdeps name aliases such as "crc32c"):
// Debian ships no modules.alias, and reading every module's .modinfo means
// decompressing thousands of .ko.xz, so only modules whose name starts with
// the alias are searched, "_generic" ones first (they need no CPU feature).
// The returned Modinfo.Name is then the real module's.
func (t *ModuleTree) Lookup(name string) (Modinfo, bool, error) {
	if _, ok := t.paths[name]; !ok {
		return t.lookupAlias(name)
	}
	return t.modinfo(name)
}

func (t *ModuleTree) lookupAlias(alias string) (Modinfo, bool, error) {
	var cands []string
	for n := range t.paths {
		if strings.HasPrefix(n, alias) {
			cands = append(cands, n)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		gi, gj := strings.HasSuffix(cands[i], "_generic"), strings.HasSuffix(cands[j], "_generic")
		if gi != gj {
			return gi
		}
		return cands[i] < cands[j]
	})
	for _, c := range cands {
		mi, _, err := t.modinfo(c)
		if err != nil {
			return Modinfo{}, false, err
		}
		if slices.Contains(mi.Aliases, alias) {
			return mi, true, nil
		}
	}
	return Modinfo{}, false, nil
}

func (t *ModuleTree) modinfo(name string) (Modinfo, bool, error) {
	img, err := t.Image(name)
	if err != nil {
		return Modinfo{}, true, err
	}
	mi, err := readModinfo(img)
	if err != nil {
		return Modinfo{}, true, fmt.Errorf("module %s: %w", name, err)
	}
	if mi.Name == "" {
		mi.Name = name
	}
	return mi, true, nil
}

// readMaybeCompressed reads a file, decompressing .xz and .zst with the
// host's xz and zstd tools.
func readMaybeCompressed(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(path, ".xz"):
		return decompress(data, "xz", "-dc", "--single-stream")
	case strings.HasSuffix(path, ".zst"):
		return decompress(data, "zstd", "-dcq")
	}
	return data, nil
}

// ModuleLookup returns a module's modinfo; ok is false for modules that
// are not loadable (built into the kernel or absent).
type ModuleLookup func(name string) (mi Modinfo, ok bool, err error)

// ModuleClosure returns the modules to insmod, in load order, so that
// wanted and everything they need are loaded: soft pre-dependencies first
// (busybox insmod and modprobe ignore them; libcrc32c needs crc32c_generic
// or nf_tables and nf_conntrack fail to load), then hard dependencies, then
// the module itself. Wanted modules that are not loadable are returned in
// missing; a missing hard dependency is an error; a missing soft one is
// skipped.
func ModuleClosure(wanted []string, lookup ModuleLookup) (order, missing []string, err error) {
	c := closure{lookup: lookup, state: map[string]int{}}
	for _, w := range wanted {
		name := modName(w)
		_, ok, err := lookup(name)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			missing = append(missing, name)
			continue
		}
		if err := c.visit(name, false); err != nil {
			return nil, nil, err
		}
	}
	return c.order, missing, nil
}

type closure struct {
	lookup ModuleLookup
	state  map[string]int // 1 visiting, 2 done
	order  []string
}

const (
	visiting = 1
	visited  = 2
)

func (c *closure) visit(name string, soft bool) error {
	switch c.state[name] {
	case visited:
		return nil
	case visiting:
		if soft {
			return nil // soft dependencies may loop back; the hard order wins
		}
		return fmt.Errorf("module dependency cycle at %s", name)
	}
	mi, ok, err := c.lookup(name)
	if err != nil {
		return err
	}
	if !ok {
		if soft {
			return nil
		}
		return fmt.Errorf("module dependency %s: %w", name, os.ErrNotExist)
	}
	if mi.Name != "" && mi.Name != name {
		return c.visit(mi.Name, soft) // an alias
	}
	c.state[name] = visiting
	for _, d := range mi.SoftPre {
		if err := c.visit(d, true); err != nil {
			return err
		}
	}
	for _, d := range mi.Depends {
		if err := c.visit(d, false); err != nil {
			return fmt.Errorf("%s needs %w", name, err)
		}
	}
	c.state[name] = visited
	c.order = append(c.order, name)
	return nil
}
