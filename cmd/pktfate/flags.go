package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// parseFlags parses args with fs. -h prints fs.Usage; a mistake is one
// usage error naming the flag, the value and what it accepts, never the
// whole usage text (fs.Usage is not called for mistakes).
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		}
		return err
	}
	return &usageError{flagError(fs, err)}
}

// dashed spells a flag as users type it: -c, --count.
func dashed(name string) string {
	if len(name) == 1 || name == "vv" {
		return "-" + name
	}
	return "--" + name
}

// flagError rewrites the flag package's messages into one line: the flag,
// the value, what it accepts.
func flagError(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		s := fmt.Sprintf("unknown flag %s", dashed(name))
		if near := nearest(strings.TrimLeft(name, "-"), flagNames(fs), 3); len(near) > 0 {
			for i, n := range near {
				near[i] = dashed(n)
			}
			s += "; did you mean " + orList(near) + "?"
		}
		return s + fmt.Sprintf(" (%s -h lists the flags)", fs.Name())
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Sprintf("%s needs a value: %s", dashed(name), accepts(fs.Lookup(name)))
	}
	var value, name, why string
	if v, rest, ok := cutQuoted(msg, "invalid value "); ok {
		value = v
		name, why, _ = strings.Cut(strings.TrimPrefix(rest, " for flag -"), ": ")
	} else if v, rest, ok := cutQuoted(msg, "invalid boolean value "); ok {
		value = v
		name, _, _ = strings.Cut(strings.TrimPrefix(rest, " for -"), ": ")
		return fmt.Sprintf("%s takes no value (%q given; write %s=false to turn it off)", dashed(name), value, dashed(name))
	} else {
		return msg
	}
	f := fs.Lookup(name)
	if f != nil {
		if _, ok := f.Value.(flag.Getter); ok && isPlainValue(f) {
			return fmt.Sprintf("%s %q: want %s", dashed(name), value, accepts(f))
		}
	}
	// A flag with a parser of its own said what is wrong.
	return fmt.Sprintf("%s %q: %s", dashed(name), value, why)
}

// cutQuoted cuts prefix and the Go-quoted string after it off s.
func cutQuoted(s, prefix string) (value, rest string, ok bool) {
	s, ok = strings.CutPrefix(s, prefix)
	if !ok {
		return "", "", false
	}
	var q string
	if _, err := fmt.Sscanf(s, "%q", &q); err != nil {
		return "", "", false
	}
	i := strings.Index(s, " for ")
	if i < 0 {
		return "", "", false
	}
	return q, s[i:], true
}

// isPlainValue reports whether f is one of the flag package's own typed
// values (its parse error says nothing useful).
func isPlainValue(f *flag.Flag) bool {
	switch f.Value.(flag.Getter).Get().(type) {
	case time.Duration, uint64, uint, int, int64, float64:
		return true
	}
	return false
}

// accepts says what a flag takes.
func accepts(f *flag.Flag) string {
	if f == nil {
		return "a value"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case time.Duration:
			return "a duration such as 500ms, 10s or 1m30s"
		case uint64, uint:
			return "a whole number, 0 or more"
		case int, int64:
			return "a whole number"
		case float64:
			return "a number"
		}
	}
	name, _ := flag.UnquoteUsage(f)
	if name == "" || name == "value" {
		return "a value (see -h)"
	}
	return "a " + name
}

func flagNames(fs *flag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	return out
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) <= 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// nearest returns up to n of the candidates closest to s (by edit
// distance, case-insensitive): those within a third of s's length (at
// least 2 edits), or failing that those s is a part of.
func nearest(s string, candidates []string, n int) []string {
	type cand struct {
		name string
		d    int
	}
	ls := strings.ToLower(s)
	limit := max(2, len(s)/3)
	var close []cand
	for _, c := range candidates {
		if d := editDistance(ls, strings.ToLower(c)); d <= limit {
			close = append(close, cand{c, d})
		}
	}
	if len(close) == 0 && len(s) >= 3 {
		for _, c := range candidates {
			if strings.Contains(strings.ToLower(c), ls) {
				close = append(close, cand{c, len(c) - len(s)})
			}
		}
	}
	sort.SliceStable(close, func(i, j int) bool {
		if close[i].d != close[j].d {
			return close[i].d < close[j].d
		}
		return close[i].name < close[j].name
	})
	var out []string
	for _, c := range close {
		if len(out) == n {
			break
		}
		if !slices.Contains(out, c.name) {
			out = append(out, c.name)
		}
	}
	return out
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printFlags lists the flags of fs, a short alias beside its long flag
// (short maps each long name to its one-letter alias).
func printFlags(w io.Writer, fs *flag.FlagSet, short map[string]string) {
	aliases := map[string]bool{}
	for _, s := range short {
		aliases[s] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if aliases[f.Name] {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		head := "  "
		if s, ok := short[f.Name]; ok {
			head += dashed(s) + ", "
		}
		head += dashed(f.Name)
		if name != "" {
			head += " " + name
		}
		if def := f.DefValue; def != "" && def != "0" && def != "false" && def != "0s" && def != "[]" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		if len(head) < 26 {
			fmt.Fprintf(w, "%-26s%s\n", head, usage)
		} else {
			fmt.Fprintf(w, "%s\n%26s%s\n", head, "", usage)
		}
	})
}
