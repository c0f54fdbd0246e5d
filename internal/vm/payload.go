package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Guest locations of the payload.
const (
	guestRepo  = "/repo"
	guestTests = "/pktfate/tests"
	guestBin   = "/usr/local/bin/pktfate"
	guestKmod  = "/pktfate/kmod"
)

// TestPackage is one package whose test binary runs in the guests.
type TestPackage struct {
	ImportPath string
	Rel        string // folder relative to the repo root ("." for the root)
	Binary     string // host path of the compiled test binary
	Race       bool   // built with the race detector
}

// GuestBinary is where the test binary is in the guest.
func (p TestPackage) GuestBinary() string {
	return guestTests + "/" + filepath.Base(p.Binary)
}

// GuestDir is the package folder in the guest's copy of the repo, where
// the test binary runs so that relative testdata/ paths work.
func (p TestPackage) GuestDir() string {
	return filepath.Join(guestRepo, p.Rel)
}

// Payload is the per-run part of the guests' initramfs: test binaries, the
// pktfate binary, host tools and the repo's testdata folders. It is the same
// for every kernel.
type Payload struct {
	Archive  string // cpio file
	Packages []TestPackage
	HasBin   bool // pktfate binary shipped
}

// PayloadConfig says what to build and where.
type PayloadConfig struct {
	RepoDir  string
	Patterns []string // go list patterns, default ./...
	// Race lists go list patterns of the packages whose test binaries are
	// built with the race detector (go test -race -c, which needs cgo:
	// the binaries link libc dynamically and ship it); none when empty.
	Race    []string
	WorkDir string
	Log     io.Writer
	NoTests bool        // build no test binary (Config.Script)
	Files   []GuestFile // extra host files
}

// GuestFile is a host file shipped into the guests at Guest; an ELF
// binary brings its shared libraries.
type GuestFile struct {
	Host, Guest string
}

// BuildPayload compiles the test binaries (go test -c) of every package
// matching the patterns that has tests, and ./cmd/pktfate when it builds,
// and writes the payload archive.
func BuildPayload(ctx context.Context, cfg PayloadConfig) (Payload, error) {
	var pkgs []TestPackage
	var err error
	if !cfg.NoTests {
		if pkgs, err = listTestPackages(ctx, cfg.RepoDir, cfg.Patterns); err != nil {
			return Payload{}, err
		}
	}
	testDir := filepath.Join(cfg.WorkDir, "tests")
	if err := os.MkdirAll(testDir, 0o755); err != nil {
		return Payload{}, fmt.Errorf("creating test binary dir: %w", err)
	}
	if len(cfg.Race) > 0 {
		if err := markRace(ctx, cfg.RepoDir, cfg.Race, pkgs); err != nil {
			return Payload{}, err
		}
	}
	if err := buildTests(ctx, cfg.RepoDir, testDir, pkgs); err != nil {
		return Payload{}, err
	}
	p := Payload{Packages: pkgs, Archive: filepath.Join(cfg.WorkDir, "payload.cpio")}
	bin := filepath.Join(cfg.WorkDir, "pktfate")
	p.HasBin = buildPktfate(ctx, cfg.RepoDir, bin, cfg.Log)
	if !p.HasBin {
		bin = ""
	}
	if err := writePayload(ctx, p, cfg.RepoDir, bin, cfg.Files, cfg.Log); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// listTestPackages runs go list and keeps the packages with test files.
func listTestPackages(ctx context.Context, repo string, patterns []string) ([]TestPackage, error) {
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	args := append([]string{"list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}\t{{.Dir}}{{end}}"}, patterns...)
	out, err := runCmd(ctx, nil, repo, "go", args...)
	if err != nil {
		return nil, fmt.Errorf("listing test packages: %w", err)
	}
	var pkgs []TestPackage
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		ip, dir, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			continue
		}
		rel, err := filepath.Rel(repo, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("listing test packages: %s is outside the repo", dir)
		}
		pkgs = append(pkgs, TestPackage{ImportPath: ip, Rel: rel})
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("listing test packages: no package with tests matches %s", strings.Join(patterns, " "))
	}
	return pkgs, nil
}

// markRace sets Race on the packages that the race patterns match.
func markRace(ctx context.Context, repo string, patterns []string, pkgs []TestPackage) error {
	args := append([]string{"list", "-f", "{{.ImportPath}}"}, patterns...)
	out, err := runCmd(ctx, nil, repo, "go", args...)
	if err != nil {
		return fmt.Errorf("listing race-detector packages: %w", err)
	}
	race := map[string]bool{}
	for _, ip := range strings.Fields(string(out)) {
		race[ip] = true
	}
	for i := range pkgs {
		pkgs[i].Race = race[pkgs[i].ImportPath]
	}
	return nil
}

// buildTests compiles the test binaries two at a time into dir.
func buildTests(ctx context.Context, repo, dir string, pkgs []TestPackage) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i := range pkgs {
		name := strings.ReplaceAll(strings.Trim(filepath.ToSlash(pkgs[i].Rel), "./"), "/", "_")
		if name == "" {
			name = "root"
		}
		pkgs[i].Binary = filepath.Join(dir, name+".test")
		args := []string{"test", "-c", "-o", pkgs[i].Binary}
		var env []string
		if pkgs[i].Race {
			args = append(args, "-race")
			env = []string{"CGO_ENABLED=1"}
		}
		args = append(args, "./"+filepath.ToSlash(pkgs[i].Rel))
		g.Go(func() error {
			if _, err := runCmd(ctx, env, repo, "go", args...); err != nil {
				return fmt.Errorf("building test binary of %s: %w", pkgs[i].ImportPath, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// buildPktfate builds ./cmd/pktfate; a missing or broken command is a
// warning, not an error, while the tracer is being written.
func buildPktfate(ctx context.Context, repo, out string, log io.Writer) bool {
	if !fileExists(filepath.Join(repo, "cmd", "pktfate")) {
		logf(log, "warning: ./cmd/pktfate does not exist yet; PKTFATE_BIN will be unset in the guests")
		return false
	}
	if _, err := runCmd(ctx, nil, repo, "go", "build", "-o", out, "./cmd/pktfate"); err != nil {
		logf(log, "warning: building ./cmd/pktfate failed, not shipped: %v", err)
		return false
	}
	return true
}

// writePayload writes the archive: binaries and their shared libraries,
// host tools, and every testdata folder of the repo under /repo.
func writePayload(ctx context.Context, p Payload, repo, bin string, files []GuestFile, log io.Writer) error {
	set := newFileSet()
	for _, f := range files {
		if !isELF(f.Host) {
			set.add(f.Guest, f.Host)
			continue
		}
		if err := set.addBinary(ctx, f.Guest, f.Host); err != nil {
			return err
		}
	}
	for _, pkg := range p.Packages {
		if err := set.addBinary(ctx, pkg.GuestBinary(), pkg.Binary); err != nil {
			return err
		}
	}
	if bin != "" {
		if err := set.addBinary(ctx, guestBin, bin); err != nil {
			return err
		}
	}
	if fileExists("/bin/bash") {
		if err := set.addBinary(ctx, guestBash, "/bin/bash"); err != nil {
			return err
		}
	}
	if err := set.addTools(ctx, log); err != nil {
		return err
	}
	if err := addTestdata(set, repo); err != nil {
		return err
	}
	return writeArchive(p.Archive, func(c *CPIOWriter) error {
		for _, pkg := range p.Packages {
			c.Dir(pkg.GuestDir(), 0)
		}
		return set.write(c)
	})
}

// addTestdata adds every testdata folder of the repo (.git and hidden
// folders skipped), keeping paths relative to the repo root.
func addTestdata(set *fileSet, repo string) error {
	err := filepath.WalkDir(repo, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, path)
		if d.IsDir() && rel != "." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() || !inTestdata(rel) {
			return nil
		}
		set.add(filepath.Join(guestRepo, rel), path)
		return nil
	})
	if err != nil {
		return fmt.Errorf("collecting testdata: %w", err)
	}
	return nil
}

func inTestdata(rel string) bool {
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		if part == "testdata" {
			return true
		}
	}
	return false
}

// writeArchive creates path and fills it with one cpio archive.
func writeArchive(path string, fill func(*CPIOWriter) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Base(path), err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	c := NewCPIOWriter(bw)
	err = fill(c)
	if err == nil {
		err = c.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}
