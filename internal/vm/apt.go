package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// listsMaxAge is how long downloaded apt lists are trusted before the next
// run refreshes them.
const listsMaxAge = 24 * time.Hour

// Default mirror and keyring, used when /etc/apt/sources.list.d names none.
const (
	defaultMirror  = "http://deb.debian.org/debian"
	defaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
)

// Apt drives apt-get and apt-cache through a private configuration
// (APT_CONFIG) whose sources, lists, status and archives all live below Dir,
// so the host's own apt state is never read or changed. Safe for concurrent
// use: Update runs at most once per Apt.
type Apt struct {
	Dir    string
	Log    io.Writer // progress notes; nil discards them
	Suites []string  // suites listed in the private sources.list

	once      sync.Once
	updateErr error
}

// config returns the path of the private apt.conf, writing it and the
// sources.list first.
func (a *Apt) config() (string, error) {
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.Dir, d), 0o755); err != nil {
			return "", fmt.Errorf("creating apt cache: %w", err)
		}
	}
	mirror, keyring := hostMirror()
	var src strings.Builder
	for _, s := range a.Suites {
		fmt.Fprintf(&src, "deb [signed-by=%s] %s %s main\n", keyring, mirror, s)
	}
	if err := writeIfChanged(filepath.Join(a.Dir, "sources.list"), []byte(src.String())); err != nil {
		return "", fmt.Errorf("writing apt sources: %w", err)
	}
	status := filepath.Join(a.Dir, "status")
	if !fileExists(status) {
		if err := os.WriteFile(status, nil, 0o644); err != nil {
			return "", fmt.Errorf("writing apt status: %w", err)
		}
	}
	conf := aptConf(a.Dir)
	path := filepath.Join(a.Dir, "apt.conf")
	if err := writeIfChanged(path, []byte(conf)); err != nil {
		return "", fmt.Errorf("writing apt config: %w", err)
	}
	return path, nil
}

// aptConf is the private configuration: everything apt reads or writes is
// below dir. The host's apt.conf.d snippets still apply (proxies), but
// AppStream/Contents downloads they enable are switched off.
func aptConf(dir string) string {
	return fmt.Sprintf(`Dir::Etc::sourcelist "%[1]s/sources.list";
Dir::Etc::sourceparts "-";
Dir::State::Lists "%[1]s/lists";
Dir::State::status "%[1]s/status";
Dir::Cache "%[1]s/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled "false";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
`, dir)
}

// hostMirror returns the Debian mirror and keyring the host uses, read from
// /etc/apt/sources.list.d/*.sources (deb822), or the defaults.
func hostMirror() (mirror, keyring string) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, st := range parseStanzas(data) {
			if m, k, ok := debianEntry(st); ok {
				return m, k
			}
		}
	}
	return defaultMirror, defaultKeyring
}

// debianEntry reports the URI and keyring of a deb822 sources stanza that
// serves Debian's main archive (not security, not a third party).
func debianEntry(st Stanza) (uri, keyring string, ok bool) {
	uri = strings.Fields(st["URIs"] + " ")[0]
	if uri == "" || !strings.HasSuffix(strings.TrimSuffix(uri, "/"), "/debian") {
		return "", "", false
	}
	keyring = st["Signed-By"]
	if keyring == "" || strings.Contains(keyring, "\n") {
		keyring = defaultKeyring
	}
	return strings.TrimSuffix(uri, "/"), keyring, true
}

// cacheOpts re-enable apt's binary package cache, which Docker-derived
// hosts switch off in apt.conf.d (docker-clean). apt reads APT_CONFIG
// before apt.conf.d, so only the command line can override it; without the
// cache every apt-cache call parses sid's lists again (4.5 s instead of 1 s).
var cacheOpts = []string{"-o", "Dir::Cache::pkgcache=pkgcache.bin", "-o", "Dir::Cache::srcpkgcache="}

// Update refreshes the private lists unless they are younger than a day.
// It runs at most once per Apt; later calls return the first result.
func (a *Apt) Update(ctx context.Context) error {
	a.once.Do(func() { a.updateErr = a.update(ctx) })
	return a.updateErr
}

func (a *Apt) update(ctx context.Context) error {
	conf, err := a.config()
	if err != nil {
		return err
	}
	stamp := filepath.Join(a.Dir, "lists", ".updated")
	if st, err := os.Stat(stamp); err == nil && time.Since(st.ModTime()) < listsMaxAge && a.stampMatches(stamp) {
		return nil
	}
	logf(a.Log, "apt: updating private lists (%s)", strings.Join(a.Suites, " "))
	if _, err := runCmd(ctx, []string{"APT_CONFIG=" + conf}, "", "apt-get", append(cacheOpts, "-q", "update")...); err != nil {
		return fmt.Errorf("updating apt lists: %w", err)
	}
	if err := os.WriteFile(stamp, []byte(strings.Join(a.Suites, " ")), 0o644); err != nil {
		return fmt.Errorf("writing apt stamp: %w", err)
	}
	return nil
}

// stampMatches reports whether the lists were fetched for the same suites.
func (a *Apt) stampMatches(stamp string) bool {
	data, err := os.ReadFile(stamp)
	return err == nil && string(data) == strings.Join(a.Suites, " ")
}

// Show returns the stanzas apt-cache show prints for specs (name,
// name=version or name/suite); only the candidate version of each.
func (a *Apt) Show(ctx context.Context, specs ...string) ([]Stanza, error) {
	conf, err := a.config()
	if err != nil {
		return nil, err
	}
	args := append(slices.Clone(cacheOpts), "show", "--no-all-versions")
	args = append(args, specs...)
	out, err := runCmd(ctx, []string{"APT_CONFIG=" + conf}, "", "apt-cache", args...)
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %w", strings.Join(specs, " "), err)
	}
	return parseStanzas(out), nil
}

// Download fetches the .deb files of specs into dir.
func (a *Apt) Download(ctx context.Context, dir string, specs ...string) error {
	conf, err := a.config()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating download dir: %w", err)
	}
	args := append(slices.Clone(cacheOpts), "-q", "download")
	args = append(args, specs...)
	if _, err := runCmd(ctx, []string{"APT_CONFIG=" + conf}, dir, "apt-get", args...); err != nil {
		return fmt.Errorf("downloading %s: %w", strings.Join(specs, " "), err)
	}
	return nil
}

// Stanza is one paragraph of a Debian control file: field name to value,
// continuation lines joined with newlines.
type Stanza map[string]string

// parseStanzas splits Debian control-file text (apt-cache show, deb822
// sources) into stanzas.
func parseStanzas(data []byte) []Stanza {
	var out []Stanza
	cur := Stanza{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 {
				out = append(out, cur)
				cur, last = Stanza{}, ""
			}
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.TrimSpace(k)
			cur[last] = strings.TrimSpace(v)
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Dep is one alternative of a Depends entry: "name (op version)".
type Dep struct {
	Name, Op, Version string
}

// parseDepends parses a Depends field into its comma-separated groups of
// "|"-separated alternatives.
func parseDepends(field string) [][]Dep {
	var out [][]Dep
	for _, group := range strings.Split(field, ",") {
		var alts []Dep
		for _, alt := range strings.Split(group, "|") {
			if d, ok := parseDep(alt); ok {
				alts = append(alts, d)
			}
		}
		if len(alts) > 0 {
			out = append(out, alts)
		}
	}
	return out
}

func parseDep(s string) (Dep, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Dep{}, false
	}
	name, rest, _ := strings.Cut(s, "(")
	d := Dep{Name: strings.TrimSpace(name)}
	if i := strings.IndexAny(d.Name, ":[ "); i >= 0 {
		d.Name = d.Name[:i]
	}
	if rest != "" {
		rel := strings.Fields(strings.TrimSuffix(strings.TrimSpace(rest), ")"))
		if len(rel) == 2 {
			d.Op, d.Version = rel[0], rel[1]
		}
	}
	return d, d.Name != ""
}

// writeIfChanged writes data to path unless it already holds exactly that.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return os.WriteFile(path, data, 0o644)
}

// runCmd runs name with args (extra env appended, in dir when not empty)
// and returns its stdout; on failure the error carries the stderr tail.
func runCmd(ctx context.Context, env []string, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, tail(stderr.String(), 2000))
	}
	return out, nil
}

// tail returns the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// logf writes one progress line to w when w is not nil.
func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
