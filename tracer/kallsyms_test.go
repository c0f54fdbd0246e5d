package tracer_test

import (
	"os"
	"strings"
	"testing"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/tracer"
)

const kallsymsFixture = "../testdata/kallsyms/kallsyms.txt"

func TestKallsymsLookup(t *testing.T) {
	s := loadSymbols(t, kallsymsFixture)
	for _, tc := range []struct {
		name   string
		addr   uint64
		sym    string
		off    uint64
		ok     bool
		format string
	}{
		{"zero", 0, "", 0, false, ""},
		{"below every text symbol", 0xffffffff80000000, "", 0, false, "0xffffffff80000000"},
		{"first of duplicate names", 0xffffffff81000000, "srso_alias_untrain_ret", 0, true, "srso_alias_untrain_ret+0x0"},
		{"inside the first of duplicates", 0xffffffff81000010, "srso_alias_untrain_ret", 0x10, true, "srso_alias_untrain_ret+0x10"},
		{"function start", 0xffffffff81e42dc0, "sk_skb_reason_drop", 0, true, "sk_skb_reason_drop+0x0"},
		{"inside a function", 0xffffffff81e42e2c, "sk_skb_reason_drop", 0x6c, true, "sk_skb_reason_drop+0x6c"},
		{"in the padding before a function", 0xffffffff81e44108, "__pfx_consume_skb", 8, true, "__pfx_consume_skb+0x8"},
		{"weak symbol listed out of order", 0xffffffff81207614, "abort", 4, true, "abort+0x4"},
		{"past the last core function", 0xffffffff81e44200, "consume_skb", 0xf0, true, "consume_skb+0xf0"},
		// Data symbols are not kept: an address in .rodata names the text symbol before it.
		{"data symbols ignored", 0xffffffff82400010, "consume_skb", 0xffffffff82400010 - 0xffffffff81e44110, true, "consume_skb+0x5bbf00"},
		{"text after data", 0xffffffff837902a8, "startup_64", 0xa8, true, "startup_64+0xa8"},
		{"module", 0xffffffffc06481b4, "nft_do_chain [nf_tables]", 0x1a4, true, "nft_do_chain+0x1a4 [nf_tables]"},
		{"exported module function", 0xffffffffc0649c31, "nft_register_chain_type [nf_tables]", 1, true, "nft_register_chain_type+0x1 [nf_tables]"},
		{"module data ignored", 0xffffffffc066a0c8, "nft_register_chain_type [nf_tables]", 0xffffffffc066a0c8 - 0xffffffffc0649c30, true, "nft_register_chain_type+0x20498 [nf_tables]"},
		{"other module", 0xffffffffc068002c, "nft_reject_inet_eval [nft_reject_inet]", 0x1c, true, "nft_reject_inet_eval+0x1c [nft_reject_inet]"},
		{"BPF program", 0xffffffffc0700042, "bpf_prog_6deef7357e7b4530_kfree_skb [bpf]", 0x42, true, "bpf_prog_6deef7357e7b4530_kfree_skb+0x42 [bpf]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sym, off, ok := s.Lookup(tc.addr)
			if sym != tc.sym || off != tc.off || ok != tc.ok {
				t.Errorf("Lookup(%#x) = %q, %#x, %v; want %q, %#x, %v", tc.addr, sym, off, ok, tc.sym, tc.off, tc.ok)
			}
			// Twice: the second answer comes from the cache.
			for range 2 {
				if got := s.Format(tc.addr); got != tc.format {
					t.Errorf("Format(%#x) = %q, want %q", tc.addr, got, tc.format)
				}
			}
		})
	}
}

func TestKallsymsDuplicateModuleAddress(t *testing.T) {
	s := loadSymbols(t, kallsymsFixture)
	// Two module functions share an address: the first listed is reported.
	if got := s.Format(0xffffffffc0648010); got != "nft_do_chain+0x0 [nf_tables]" {
		t.Errorf("Format = %q, want nft_do_chain+0x0 [nf_tables]", got)
	}
}

func TestKallsymsNil(t *testing.T) {
	var s *tracer.Symbols
	if _, _, ok := s.Lookup(0xffffffff81e42dc0); ok {
		t.Error("nil Symbols resolved an address")
	}
	if got := s.Format(0xffffffff81e42dc0); got != "0xffffffff81e42dc0" {
		t.Errorf("nil Symbols Format = %q, want the hex address", got)
	}
	if got := s.Format(0); got != "" {
		t.Errorf("Format(0) = %q, want empty", got)
	}
}

func TestKallsymsEmpty(t *testing.T) {
	s, err := tracer.ParseKallsyms(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.Lookup(0xffffffff81000000); ok {
		t.Error("empty table resolved an address")
	}
	if got := s.Format(0xffffffff81000000); got != "0xffffffff81000000" {
		t.Errorf("Format = %q", got)
	}
}

func TestKallsymsErrors(t *testing.T) {
	zero, err := os.ReadFile("../testdata/kallsyms/kptr_restrict.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, input, want string
	}{
		{"kptr_restrict: every address zero", string(zero), "all addresses are zero"},
		{"missing name", "ffffffff81000000 T _stext\nffffffff81000010 T\n", "line 2"},
		{"empty line", "ffffffff81000000 T _stext\n\n", "line 2"},
		{"bad address", "ffffffff81000000 T _stext\nffffffff8100zz00 t broken\n", `line 2: bad address "ffffffff8100zz00"`},
		{"address too long", "1ffffffff81000000 T _stext\n", "line 1: bad address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tracer.ParseKallsyms(strings.NewReader(tc.input))
			if err == nil {
				t.Fatalf("no error; table %v", s)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Zero addresses of non-text symbols (per-CPU variables) are normal.
	s, err := tracer.ParseKallsyms(strings.NewReader("0000000000000000 A fixed_percpu_data\nffffffff81000000 T _stext\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Format(0xffffffff81000004); got != "_stext+0x4" {
		t.Errorf("Format = %q, want _stext+0x4", got)
	}
}

func TestFunction(t *testing.T) {
	for in, want := range map[string]string{
		"sk_skb_reason_drop+0x6c":        "sk_skb_reason_drop",
		"nft_do_chain+0x1a4 [nf_tables]": "nft_do_chain",
		"0xffffffff81e42e2c":             "0xffffffff81e42e2c",
		"":                               "",
	} {
		if got := fate.Function(in); got != want {
			t.Errorf("Function(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRecordsKallsyms checks that the kallsyms fixture of the records is
// real kernel text: every recorded location lands inside a named function.
func TestRecordsKallsyms(t *testing.T) {
	s := loadSymbols(t, tracer.RecordsKallsyms)
	m, _ := tracer.LoadRecords(t, tracer.RecordsDir)
	for _, w := range m.Records {
		name, off, ok := s.Lookup(w.LocationAddr)
		if !ok || strings.HasPrefix(name, "__pfx_") || off == 0 || off > 0x4000 {
			t.Errorf("%s: location %#x resolves to %q+%#x (%v)", w.Name, w.LocationAddr, name, off, ok)
		}
	}
}
