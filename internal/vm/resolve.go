package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// resolveMaxAge is how long a resolved kernel is reused before the line is
// resolved again.
const resolveMaxAge = 24 * time.Hour

// Resolved is the newest kernel of a line, as apt saw it at ResolvedAt.
type Resolved struct {
	Line       string    `json:"line"`
	Suite      string    `json:"suite"`
	Release    string    `json:"release"`  // uname -r, e.g. 6.12.95+deb12-amd64
	Version    string    `json:"version"`  // Debian version of the image package
	Packages   []string  `json:"packages"` // apt-get download specs
	ResolvedAt time.Time `json:"resolved_at"`
}

// Resolver finds the newest kernel of each line, caching the answer in the
// cache's resolve/ folder for a day; when apt cannot be reached it falls
// back to the last answer (offline runs). Stale lines among Lines are
// resolved together, with two apt-cache calls in all (each call parses
// sid's lists, a few seconds).
type Resolver struct {
	Cache Cache
	Apt   *Apt
	Log   io.Writer
	Lines []Line // lines of this run, resolved together

	once     sync.Once
	fresh    map[string]Resolved
	freshErr error
}

// Resolve returns the kernel to use for line. Safe for concurrent use.
func (r *Resolver) Resolve(ctx context.Context, line Line) (Resolved, error) {
	cached, cacheErr := r.load(line)
	if cacheErr == nil && time.Since(cached.ResolvedAt) < resolveMaxAge {
		return cached, nil
	}
	r.once.Do(func() { r.fresh, r.freshErr = r.resolveStale(ctx) })
	res, ok := r.fresh[line.Name]
	if !ok {
		err := r.freshErr
		if err == nil {
			err = errors.New("line not resolved")
		}
		if cacheErr == nil {
			logf(r.Log, "%s: resolving failed, reusing %s from %s: %v", line.Name, cached.Release, cached.ResolvedAt.Format(time.DateOnly), err)
			return cached, nil
		}
		return Resolved{}, fmt.Errorf("resolving kernel %s: %w", line.Name, err)
	}
	if err := r.store(res); err != nil {
		return Resolved{}, err
	}
	return res, nil
}

// resolveStale resolves every line of the run whose cached answer is stale.
func (r *Resolver) resolveStale(ctx context.Context) (map[string]Resolved, error) {
	var stale []Line
	for _, l := range r.Lines {
		if c, err := r.load(l); err != nil || time.Since(c.ResolvedAt) >= resolveMaxAge {
			stale = append(stale, l)
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	return r.resolveFresh(ctx, stale)
}

// resolveFresh asks apt for the newest kernels of lines.
func (r *Resolver) resolveFresh(ctx context.Context, lines []Line) (map[string]Resolved, error) {
	if err := r.Apt.Update(ctx); err != nil {
		return nil, err
	}
	var metaSpecs []string
	for _, l := range lines {
		metaSpecs = append(metaSpecs, "linux-image-amd64/"+l.Suite, "linux-headers-amd64/"+l.Suite)
	}
	metas, err := r.Apt.Show(ctx, metaSpecs...)
	if err != nil {
		return nil, err
	}
	// apt-cache prints one stanza per argument, in order: two per line.
	if len(metas) != len(metaSpecs) {
		return nil, fmt.Errorf("apt-cache show %s: got %d stanzas, want %d", strings.Join(metaSpecs, " "), len(metas), len(metaSpecs))
	}
	images := make([]Dep, len(lines))
	headers := make([]Dep, len(lines))
	var pkgSpecs []string
	for i := range lines {
		if images[i], headers[i], err = pickFromMetas(metas[2*i : 2*i+2]); err != nil {
			return nil, fmt.Errorf("%s: %w", lines[i].Suite, err)
		}
		pkgSpecs = append(pkgSpecs, images[i].Name+"="+images[i].Version, headers[i].Name+"="+headers[i].Version)
	}
	pkgs, err := r.Apt.Show(ctx, pkgSpecs...)
	if err != nil {
		return nil, err
	}
	out := map[string]Resolved{}
	for i, l := range lines {
		release := strings.TrimPrefix(images[i].Name, "linux-image-")
		out[l.Name] = Resolved{
			Line:       l.Name,
			Suite:      l.Suite,
			Release:    release,
			Version:    images[i].Version,
			Packages:   kernelPackages(release, l.Suite, images[i], headers[i], stanzasOf(pkgs, images[i].Name, headers[i].Name)),
			ResolvedAt: time.Now().UTC(),
		}
	}
	return out, nil
}

// stanzasOf keeps the stanzas of the named packages.
func stanzasOf(all []Stanza, names ...string) []Stanza {
	var out []Stanza
	for _, st := range all {
		if slices.Contains(names, st["Package"]) {
			out = append(out, st)
		}
	}
	return out
}

// pickFromMetas finds the versioned image and headers packages the
// linux-image-amd64 and linux-headers-amd64 metapackages depend on.
func pickFromMetas(metas []Stanza) (image, headers Dep, err error) {
	for _, st := range metas {
		for _, group := range parseDepends(st["Depends"]) {
			d := group[0]
			switch {
			case st["Package"] == "linux-image-amd64" && strings.HasPrefix(d.Name, "linux-image-"):
				image = d
			case st["Package"] == "linux-headers-amd64" && strings.HasPrefix(d.Name, "linux-headers-"):
				headers = d
			}
		}
	}
	if image.Name == "" || headers.Name == "" || image.Version == "" {
		return Dep{}, Dep{}, errors.New("metapackages name no versioned linux-image/linux-headers package")
	}
	return image, headers, nil
}

// kernelPackages lists what to download for a kernel: the image and headers
// packages and those of their dependencies that belong to this kernel
// (sid's linux-binary/linux-modules/linux-base split, the common headers,
// linux-kbuild). Generic packages (linux-base, compilers) are left out.
func kernelPackages(release, suite string, image, headers Dep, stanzas []Stanza) []string {
	abi := strings.TrimSuffix(release, "-amd64")
	specs := []string{spec(image, suite), spec(headers, suite)}
	seen := map[string]bool{image.Name: true, headers.Name: true}
	for _, st := range stanzas {
		for _, group := range parseDepends(st["Depends"]) {
			d := group[0]
			if seen[d.Name] || !strings.HasPrefix(d.Name, "linux-") || strings.HasPrefix(d.Name, "linux-image-") {
				continue
			}
			if !strings.Contains(d.Name, abi) && !strings.HasPrefix(d.Name, "linux-kbuild-") {
				continue
			}
			seen[d.Name] = true
			specs = append(specs, spec(d, suite))
		}
	}
	return specs
}

// spec is the apt-get download argument for d: pinned when the dependency
// is exact, else the suite's candidate.
func spec(d Dep, suite string) string {
	if d.Op == "=" && d.Version != "" {
		return d.Name + "=" + d.Version
	}
	return d.Name + "/" + suite
}

func (r *Resolver) load(line Line) (Resolved, error) {
	var res Resolved
	data, err := os.ReadFile(r.Cache.resolveFile(line.Name))
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return res, fmt.Errorf("reading cached resolution: %w", err)
	}
	if res.Release == "" || res.Suite != line.Suite {
		return res, errors.New("cached resolution is for another suite")
	}
	return res, nil
}

func (r *Resolver) store(res Resolved) error {
	path := r.Cache.resolveFile(res.Line)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("storing resolution: %w", err)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("storing resolution: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("storing resolution: %w", err)
	}
	return nil
}
