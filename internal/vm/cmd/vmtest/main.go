// Command vmtest runs pktfate's Go tests inside Debian kernels under QEMU
// (the kernel matrix, see docs/vmtest.md), or opens a shell in one of them.
//
//	go run ./internal/vm/cmd/vmtest [-kernel 6.1,6.12,7.2] [-run REGEXP] [-timeout 10m]
//	go run ./internal/vm/cmd/vmtest -shell -kernel 6.12
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pktfate/pktfate/internal/vm"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := vm.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(1)
	}
}

// parseFlags turns the command line into a harness configuration.
func parseFlags(args []string) (vm.Config, error) {
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	kernels := fs.String("kernel", "", "comma-separated kernel lines to run (6.1,6.12,7.2); empty for all")
	run := fs.String("run", "", "run only tests matching this regexp (passed to each test binary as -test.run)")
	timeout := fs.Duration("timeout", 10*time.Minute, "hard limit per VM")
	shell := fs.Bool("shell", false, "open an interactive shell in the VM instead of running tests (one -kernel)")
	keep := fs.Bool("keep", false, "keep the temporary work dir (initramfs archives, test binaries)")
	verbose := fs.Bool("v", false, "print progress notes")
	pkgs := fs.String("pkg", "./...", "comma-separated go package patterns whose tests run in the VMs")
	kmod := fs.String("kmod", "", "comma-separated out-of-tree module folders to build per kernel, or none (default: internal/vm/testdata/hellomod and kmod/ when present)")
	modules := fs.String("modules", "", "comma-separated kernel modules to load at boot besides the default set (see vm.GuestModules)")
	artifacts := fs.String("artifacts", "", "folder that receives the files the guests' tests send out, in a folder per kernel line (e.g. 6.12/capture.pcapng); default: discard them")
	var race raceFlag
	fs.Var(&race, "race", "build the test binaries with the race detector: -race for every package, -race=PATTERNS (comma-separated go package patterns) for some")
	busy := fs.Int("busy", 0, "CPU-burning processes each guest runs while its tests run (tests see PKTFATE_VM_BUSY)")
	retries := fs.Int("retries", 1, "times a VM that exited without a result and without a kernel error is booted again (a hang or a kernel error is never retried)")
	parallel := fs.Int("parallel", 2, "VMs at a time (1 or 2; 2 is faster on a 2-core host: TCG does not keep both cores busy)")
	if err := fs.Parse(args); err != nil {
		return vm.Config{}, err
	}
	if fs.NArg() > 0 {
		return vm.Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	lines, err := vm.ParseLines(*kernels)
	if err != nil {
		return vm.Config{}, err
	}
	repo, err := repoRoot()
	if err != nil {
		return vm.Config{}, err
	}
	if *busy < 0 || *busy > 64 {
		return vm.Config{}, fmt.Errorf("-busy %d: want 0 to 64", *busy)
	}
	if *retries < 0 {
		return vm.Config{}, fmt.Errorf("-retries %d: want 0 or more", *retries)
	}
	if *parallel < 1 || *parallel > 2 {
		return vm.Config{}, fmt.Errorf("-parallel %d: want 1 or 2", *parallel)
	}
	return vm.Config{
		Lines: lines, Run: *run, Timeout: *timeout, Shell: *shell, Keep: *keep, Verbose: *verbose,
		Patterns: splitList(*pkgs), KmodDirs: kmodDirs(repo, *kmod), Modules: splitList(*modules), Parallel: *parallel,
		Retries: *retries, Race: race.patterns, Busy: *busy,
		Artifacts: *artifacts,
		Cache:     vm.Cache{Dir: vm.CacheDir()}, RepoDir: repo, Out: os.Stdout,
	}, nil
}

// kmodDirs resolves -kmod against the repo; the default is the harness's
// hello module plus the project's kmod/ once it has a Kbuild or Makefile.
func kmodDirs(repo, flagValue string) []string {
	var dirs []string
	if flagValue == "" {
		dirs = []string{filepath.Join(repo, "internal/vm/testdata/hellomod")}
		k := filepath.Join(repo, "kmod")
		if fileExists(filepath.Join(k, "Kbuild")) || fileExists(filepath.Join(k, "Makefile")) {
			dirs = append(dirs, k)
		}
		return dirs
	}
	if flagValue == "none" {
		return nil
	}
	for _, d := range splitList(flagValue) {
		if !filepath.IsAbs(d) {
			d = filepath.Join(repo, d)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// repoRoot is the folder of the main module's go.mod, found upwards from
// the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding repo root: no go.mod above the working directory")
		}
		dir = parent
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// raceFlag is -race: alone (or =true, =all) every package, =false none,
// else a comma-separated list of package patterns.
type raceFlag struct{ patterns []string }

func (r *raceFlag) IsBoolFlag() bool { return true }

func (r *raceFlag) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(r.patterns, ",")
}

func (r *raceFlag) Set(v string) error {
	switch v {
	case "true", "all":
		r.patterns = []string{"./..."}
	case "false", "", "none":
		r.patterns = nil
	default:
		r.patterns = splitList(v)
	}
	return nil
}
