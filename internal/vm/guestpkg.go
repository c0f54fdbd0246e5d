package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// GuestPackages are Debian packages shipped into the guests of one line
// (the peer benchmark's perf, bpftrace, dropwatch): Specs are apt specs
// ("linux-perf/bookworm-backports", "bpftrace/bookworm"). Their programs
// (usr/bin, usr/sbin, bin, sbin) go into the guest under the same paths,
// with their shared libraries; Dirs are further folders of the extracted
// packages shipped whole (e.g. data a program reads at run time).
type GuestPackages struct {
	Specs []string
	Dirs  []string
}

// guestPkgRoot is what FetchGuestPackages made: the extracted tree and the
// programs of the named packages, relative to it.
type guestPkgRoot struct {
	Root     string
	Programs []string
}

// FetchGuestPackages downloads the named packages, and those of their
// dependencies (Depends and Pre-Depends, first alternative, recursively)
// that the host does not have installed, through the private apt, and
// extracts them into one cached folder per set of specs. Dependencies are
// taken from the base suite of the first spec (bookworm for
// bookworm-backports): the host runs that release, so the libraries it has
// fit, and ldd finds the rest in the extracted tree.
func FetchGuestPackages(ctx context.Context, cache Cache, apt *Apt, pkgs GuestPackages, log io.Writer) (guestPkgRoot, error) {
	if len(pkgs.Specs) == 0 {
		return guestPkgRoot{}, nil
	}
	specs := slices.Clone(pkgs.Specs)
	sort.Strings(specs)
	sum := sha256.Sum256([]byte(strings.Join(specs, "\n")))
	dir := cache.path("guestpkg", hex.EncodeToString(sum[:])[:16])
	root := filepath.Join(dir, "root")
	if !fileExists(filepath.Join(dir, completeStamp)) {
		if err := fetchGuestPackages(ctx, apt, specs, dir, root, log); err != nil {
			return guestPkgRoot{}, err
		}
	}
	progs, err := listPrograms(root, pkgs.Specs)
	if err != nil {
		return guestPkgRoot{}, err
	}
	return guestPkgRoot{Root: root, Programs: progs}, nil
}

func fetchGuestPackages(ctx context.Context, apt *Apt, specs []string, dir, root string, log io.Writer) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clearing guest packages: %w", err)
	}
	if err := apt.Update(ctx); err != nil {
		return err
	}
	base := baseSuite(specs[0])
	deps, err := missingDeps(ctx, apt, specs, base)
	if err != nil {
		return err
	}
	debs := filepath.Join(dir, "debs")
	all := append(slices.Clone(specs), deps...)
	logf(log, "guest packages: downloading %s", strings.Join(all, " "))
	if err := apt.Download(ctx, debs, all...); err != nil {
		return err
	}
	if err := extractDebs(ctx, debs, root); err != nil {
		return err
	}
	// Which files each named package owns, for listPrograms.
	for _, s := range specs {
		name, _, _ := strings.Cut(s, "/")
		name, _, _ = strings.Cut(name, "=")
		matches, _ := filepath.Glob(filepath.Join(debs, name+"_*.deb"))
		if len(matches) != 1 {
			return fmt.Errorf("guest packages: want one downloaded %s, found %d", name, len(matches))
		}
		out, err := runCmd(ctx, nil, "", "dpkg-deb", "--fsys-tarfile", matches[0])
		if err != nil {
			return fmt.Errorf("listing %s: %w", name, err)
		}
		list, err := tarNames(out)
		if err != nil {
			return fmt.Errorf("listing %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(root, ".files-"+name), []byte(strings.Join(list, "\n")), 0o644); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(debs); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, completeStamp), []byte(strings.Join(all, "\n")+"\n"), 0o644)
}

// baseSuite is the release a spec's dependencies come from.
func baseSuite(spec string) string {
	_, suite, ok := strings.Cut(spec, "/")
	if !ok {
		return "bookworm"
	}
	return strings.TrimSuffix(suite, "-backports")
}

// missingDeps walks the dependencies of specs breadth first and returns,
// as name/suite specs, those the host has not installed.
func missingDeps(ctx context.Context, apt *Apt, specs []string, suite string) ([]string, error) {
	seen := map[string]bool{}
	for _, s := range specs {
		name, _, _ := strings.Cut(s, "/")
		seen[name] = true
	}
	var missing []string
	level := specs
	for len(level) > 0 {
		stanzas, err := showEach(ctx, apt, level)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, st := range stanzas {
			for _, field := range []string{st["Pre-Depends"], st["Depends"]} {
				for _, group := range parseDepends(field) {
					d := group[0]
					if seen[d.Name] {
						continue
					}
					seen[d.Name] = true
					if hostHas(d.Name) {
						continue
					}
					next = append(next, d.Name+"/"+suite)
				}
			}
		}
		missing = append(missing, next...)
		level = next
	}
	return missing, nil
}

// showEach is apt.Show of specs, one at a time when the whole call fails
// (a virtual package among them makes apt-cache fail); specs apt does not
// know are skipped (virtual packages such as perl:any).
func showEach(ctx context.Context, apt *Apt, specs []string) ([]Stanza, error) {
	if st, err := apt.Show(ctx, specs...); err == nil {
		return st, nil
	}
	var out []Stanza
	for _, s := range specs {
		st, err := apt.Show(ctx, s)
		if err != nil {
			continue
		}
		out = append(out, st...)
	}
	return out, nil
}

// hostHas reports whether the host has the package installed.
func hostHas(name string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", name).Output()
	return err == nil && strings.HasPrefix(string(out), "ii")
}

// tarNames lists the regular files and symlinks of a tar stream as
// absolute paths.
func tarNames(tarball []byte) ([]string, error) {
	cmd := exec.Command("tar", "-t", "-v")
	cmd.Stdin = strings.NewReader(string(tarball))
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || (f[0][0] != '-' && f[0][0] != 'l') {
			continue
		}
		// "-rw-r--r-- root/root 123 2023-01-01 00:00 ./usr/bin/x" (a
		// symlink adds "-> target")
		names = append(names, "/"+strings.TrimPrefix(f[5], "./"))
	}
	return names, nil
}

// listPrograms returns the named packages' files in program folders.
func listPrograms(root string, specs []string) ([]string, error) {
	var progs []string
	for _, s := range specs {
		name, _, _ := strings.Cut(s, "/")
		data, err := os.ReadFile(filepath.Join(root, ".files-"+name))
		if err != nil {
			return nil, fmt.Errorf("guest packages: %w", err)
		}
		for _, p := range strings.Split(string(data), "\n") {
			for _, d := range []string{"/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"} {
				if strings.HasPrefix(p, d) {
					progs = append(progs, p)
				}
			}
		}
	}
	return progs, nil
}

// addGuestPackages adds the programs of r (and dirs, relative to its root)
// to s with their shared libraries, looked up in the extracted tree before
// the host's.
func (s *fileSet) addGuestPackages(ctx context.Context, r guestPkgRoot, dirs []string) error {
	var libDirs []string
	for _, d := range []string{"usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib"} {
		if fileExists(filepath.Join(r.Root, d)) {
			libDirs = append(libDirs, filepath.Join(r.Root, d))
		}
	}
	env := []string{"LD_LIBRARY_PATH=" + strings.Join(libDirs, ":")}
	for _, p := range r.Programs {
		host := filepath.Join(r.Root, p)
		if st, err := os.Lstat(host); err != nil || !st.Mode().IsRegular() {
			if err == nil && st.Mode()&os.ModeSymlink != 0 {
				if t, err := os.Readlink(host); err == nil {
					s.link(p, t)
				}
			}
			continue
		}
		s.add(p, host)
		if !isELF(host) {
			continue
		}
		libs, err := sharedLibsEnv(ctx, env, host)
		if err != nil {
			return err
		}
		for _, l := range libs {
			if rel, err := filepath.Rel(r.Root, l); err == nil && !strings.HasPrefix(rel, "..") {
				s.add("/"+rel, l)
				continue
			}
			s.add(guestLibPath(l), l)
		}
	}
	for _, d := range dirs {
		base := filepath.Join(r.Root, d)
		err := filepath.Walk(base, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(r.Root, path)
			switch {
			case info.Mode().IsRegular():
				s.add("/"+rel, path)
			case info.Mode()&os.ModeSymlink != 0:
				if t, err := os.Readlink(path); err == nil {
					s.link("/"+rel, t)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("shipping %s: %w", d, err)
		}
	}
	return nil
}

// isELF reports whether path starts with the ELF magic.
func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "\x7fELF"
}
