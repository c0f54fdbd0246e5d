// Command benchpeers runs pktfate's peer benchmark (make bench-peers, see
// bench/peers/README.md): it boots the Debian kernels under QEMU with
// instruction counting and one vCPU, ships perf, bpftrace, dropwatch, the
// static flood sender and pktfate into them, runs the guest driver
// (bench/peers/cmd/peersguest) in one boot per kernel, and prints the
// table.
//
//	go run ./bench/peers/cmd/benchpeers [-kernel 6.12,6.1] [-rounds 3] [-out table.md]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pktfate/pktfate/bench/peers"
	"github.com/pktfate/pktfate/internal/vm"
)

type config struct {
	kernels   string
	rounds    int
	probe     time.Duration
	duration  time.Duration
	tools     string
	out       string
	artifacts string
	timeout   time.Duration
	verbose   bool
	from      string
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("benchpeers", flag.ContinueOnError)
	fs.StringVar(&cfg.kernels, "kernel", "6.12,6.1", "kernel lines, comma-separated")
	fs.IntVar(&cfg.rounds, "rounds", 3, "runs of each tool")
	fs.DurationVar(&cfg.probe, "probe", 3*time.Second, "probe phase per run (guest time): the tool's start-up, before the flood")
	fs.DurationVar(&cfg.duration, "duration", 2*time.Second, "flood per run (guest time)")
	fs.StringVar(&cfg.tools, "tools", "bench/peers/tools.txt", "tools file (name | kind | args)")
	fs.StringVar(&cfg.out, "out", "", "also write the table to this file")
	fs.StringVar(&cfg.artifacts, "artifacts", "", "keep what the guests sent (peers.json, raw outputs) in this folder (default: a temporary one)")
	fs.DurationVar(&cfg.timeout, "timeout", 90*time.Minute, "hard limit per VM")
	fs.BoolVar(&cfg.verbose, "v", false, "progress notes")
	fs.StringVar(&cfg.from, "from", "", "boot nothing: print the table of an earlier run's -artifacts folder")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "benchpeers:", err)
		os.Exit(1)
	}
}

// guestPackages are the peers each line's guest gets: perf from the
// line's own suite (matching its kernel), bpftrace and dropwatch from
// bookworm.
func guestPackages(line vm.Line) vm.GuestPackages {
	return vm.GuestPackages{Specs: []string{"linux-perf/" + line.Suite, "bpftrace/bookworm", "dropwatch/bookworm"}}
}

func run(ctx context.Context, cfg config) error {
	lines, err := vm.ParseLines(cfg.kernels)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.Suite != "bookworm" && l.Suite != "bookworm-backports" {
			return fmt.Errorf("-kernel %s: the peers come from bookworm and its backports; line %s is %s", cfg.kernels, l.Name, l.Suite)
		}
	}
	if cfg.from != "" {
		return printTable(cfg, lines, cfg.from, nil, 0)
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return errors.New("run benchpeers from the repo root (make bench-peers)")
	}
	if _, err := os.Stat(cfg.tools); err != nil {
		return fmt.Errorf("reading the tools file: %w", err)
	}
	work, err := os.MkdirTemp("", "pktfate-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if cfg.artifacts == "" {
		cfg.artifacts = filepath.Join(work, "artifacts")
	}
	flood := filepath.Join(work, "flood")
	if out, err := exec.CommandContext(ctx, "gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", flood, "bench/peers/flood/flood.c").CombinedOutput(); err != nil {
		return fmt.Errorf("building the flood sender (gcc -static; libc6-dev): %w: %s", err, out)
	}
	driver := filepath.Join(work, "peersguest")
	build := exec.CommandContext(ctx, "go", "build", "-o", driver, "./bench/peers/cmd/peersguest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the guest driver: %w: %s", err, out)
	}
	pkgs := map[string]vm.GuestPackages{}
	for _, l := range lines {
		pkgs[l.Name] = guestPackages(l)
	}
	script := fmt.Sprintf("/pktfate/peers/peersguest -rounds %d -probe %s -duration %s", cfg.rounds, cfg.probe, cfg.duration)
	vcfg := vm.Config{
		Lines: lines, Timeout: cfg.timeout, Verbose: cfg.verbose, Parallel: 2, Retries: 0,
		Artifacts: cfg.artifacts, Cache: vm.Cache{Dir: vm.CacheDir()}, RepoDir: repo, Out: os.Stdout,
		Machine: vm.Machine{ICount: true, CPUs: 1, Memory: "2G"},
		Script:  script,
		Files: []vm.GuestFile{
			{Host: flood, Guest: "/pktfate/peers/flood"},
			{Host: driver, Guest: "/pktfate/peers/peersguest"},
			{Host: cfg.tools, Guest: "/pktfate/peers/tools.txt"},
		},
		GuestPackages: pkgs,
	}
	start := time.Now()
	runErr := vm.Run(ctx, vcfg)
	return printTable(cfg, lines, cfg.artifacts, runErr, time.Since(start))
}

// printTable reads the guests' peers.json from dir and prints the table.
func printTable(cfg config, lines []vm.Line, dir string, runErr error, took time.Duration) error {
	var kernels []peers.Kernel
	for _, l := range lines {
		data, err := os.ReadFile(filepath.Join(dir, l.Name, "peers.json"))
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchpeers: %s sent no results: %v\n", l.Name, err)
			continue
		}
		var rep struct {
			Kernel   string            `json:"kernel"`
			Versions map[string]string `json:"versions"`
			Runs     []peers.Run       `json:"runs"`
		}
		if err := json.Unmarshal(data, &rep); err != nil {
			return fmt.Errorf("reading %s's results: %w", l.Name, err)
		}
		kernels = append(kernels, peers.Kernel{Release: rep.Kernel, Rows: peers.Summarize(rep.Runs)})
		var vs []string
		for k, v := range rep.Versions {
			vs = append(vs, k+": "+strings.ReplaceAll(v, "\n", " "))
		}
		fmt.Printf("versions on %s: %s\n", rep.Kernel, strings.Join(vs, "; "))
	}
	var table strings.Builder
	peers.WriteTable(&table, kernels)
	fmt.Printf("\npeer benchmark (%s, took %s):\n\n%s", dir, took.Round(time.Second), table.String())
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(table.String()), 0o644); err != nil {
			return err
		}
	}
	if len(kernels) != len(lines) {
		return errors.Join(runErr, fmt.Errorf("%d of %d kernels sent results", len(kernels), len(lines)))
	}
	return runErr
}
