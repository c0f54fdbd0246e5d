package vm

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	sec := []byte("license=GPL\x00alias=crypto-crc32c\x00alias=crc32c\x00" +
		"softdep=pre: crc32c post: foo-bar\x00depends=nf_conntrack,nf-defrag-ipv4,\x00name=nft-ct\x00vermagic=6.1.0 SMP\x00")
	mi := parseModinfo(sec)
	if mi.Name != "nft_ct" {
		t.Errorf("name = %q, want nft_ct", mi.Name)
	}
	if want := []string{"nf_conntrack", "nf_defrag_ipv4"}; !slices.Equal(mi.Depends, want) {
		t.Errorf("depends = %q, want %q", mi.Depends, want)
	}
	if want := []string{"crc32c"}; !slices.Equal(mi.SoftPre, want) {
		t.Errorf("softdep pre = %q, want %q (post: must be ignored)", mi.SoftPre, want)
	}
	if want := []string{"crypto-crc32c", "crc32c"}; !slices.Equal(mi.Aliases, want) {
		t.Errorf("aliases = %q, want %q", mi.Aliases, want)
	}
	if empty := parseModinfo([]byte("depends=\x00")); len(empty.Depends) != 0 {
		t.Errorf("empty depends parsed as %q", empty.Depends)
	}
}

func TestModName(t *testing.T) {
	for in, want := range map[string]string{
		"/x/kernel/net/nft-ct.ko.xz": "nft_ct",
		"veth.ko":                    "veth",
		"crc32c_generic.ko.zst":      "crc32c_generic",
		"ip6t_REJECT":                "ip6t_REJECT",
	} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeModules is a ModuleLookup over a map; names listed in aliases
// resolve to another module, as ModuleTree does for softdep aliases.
func fakeModules(mods map[string]Modinfo, aliases map[string]string) ModuleLookup {
	return func(name string) (Modinfo, bool, error) {
		if real, ok := aliases[name]; ok {
			name = real
		}
		mi, ok := mods[name]
		if ok && mi.Name == "" {
			mi.Name = name
		}
		return mi, ok, nil
	}
}

func TestModuleClosureOrder(t *testing.T) {
	mods := map[string]Modinfo{
		"crc32c_generic": {},
		"libcrc32c":      {SoftPre: []string{"crc32c"}},
		"nfnetlink":      {},
		"nf_defrag_ipv4": {},
		"nf_defrag_ipv6": {},
		"nf_conntrack":   {Depends: []string{"nf_defrag_ipv6", "libcrc32c", "nf_defrag_ipv4"}},
		"nf_tables":      {Depends: []string{"nfnetlink", "libcrc32c"}},
		"nft_ct":         {Depends: []string{"nf_tables", "nf_conntrack"}},
		"veth":           {},
	}
	order, missing, err := ModuleClosure([]string{"veth", "nft_ct", "ipv6", "nf_tables"},
		fakeModules(mods, map[string]string{"crc32c": "crc32c_generic"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, []string{"ipv6"}) {
		t.Errorf("missing = %q, want [ipv6] (built in)", missing)
	}
	if len(order) != len(mods) {
		t.Errorf("order %q has %d modules, want %d, each once", order, len(order), len(mods))
	}
	pos := map[string]int{}
	for i, m := range order {
		if _, dup := pos[m]; dup {
			t.Errorf("%s listed twice in %q", m, order)
		}
		pos[m] = i
	}
	before := [][2]string{
		{"crc32c_generic", "libcrc32c"}, // soft dependency through an alias
		{"libcrc32c", "nf_tables"}, {"nfnetlink", "nf_tables"},
		{"nf_defrag_ipv6", "nf_conntrack"}, {"nf_tables", "nft_ct"}, {"nf_conntrack", "nft_ct"},
	}
	for _, b := range before {
		if pos[b[0]] >= pos[b[1]] {
			t.Errorf("%s must load before %s: order %q", b[0], b[1], order)
		}
	}
}

func TestModuleClosureErrors(t *testing.T) {
	t.Run("missing hard dependency", func(t *testing.T) {
		mods := map[string]Modinfo{"nft_ct": {Depends: []string{"nf_tables"}}}
		_, _, err := ModuleClosure([]string{"nft_ct"}, fakeModules(mods, nil))
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nf_tables") {
			t.Errorf("err = %v, want a not-exist error naming nf_tables", err)
		}
	})
	t.Run("missing soft dependency is skipped", func(t *testing.T) {
		mods := map[string]Modinfo{"libcrc32c": {SoftPre: []string{"crc32c"}}}
		order, _, err := ModuleClosure([]string{"libcrc32c"}, fakeModules(mods, nil))
		if err != nil || !slices.Equal(order, []string{"libcrc32c"}) {
			t.Errorf("order, err = %q, %v; want [libcrc32c], nil", order, err)
		}
	})
	t.Run("hard cycle", func(t *testing.T) {
		mods := map[string]Modinfo{"a": {Depends: []string{"b"}}, "b": {Depends: []string{"a"}}}
		if _, _, err := ModuleClosure([]string{"a"}, fakeModules(mods, nil)); err == nil {
			t.Error("cycle not reported")
		}
	})
	t.Run("soft cycle tolerated", func(t *testing.T) {
		mods := map[string]Modinfo{"a": {SoftPre: []string{"b"}}, "b": {Depends: []string{"a"}}}
		if _, _, err := ModuleClosure([]string{"a"}, fakeModules(mods, nil)); err == nil {
			t.Error("b hard-depends on a while a is loading: want a cycle error")
		}
		mods = map[string]Modinfo{"a": {SoftPre: []string{"b"}}, "b": {SoftPre: []string{"a"}}}
		order, _, err := ModuleClosure([]string{"a"}, fakeModules(mods, nil))
		if err != nil || !slices.Equal(order, []string{"b", "a"}) {
			t.Errorf("order, err = %q, %v; want [b a], nil", order, err)
		}
	})
}
