// Command pktfate tells what happened to packets that entered a Linux box
// and never came out: dropped or consumed, where, and why.
//
//	sudo pktfate trace [flags] [pcap-filter]
//	sudo pktfate top [flags] [pcap-filter]
//	pktfate report [flags] FILE [pcap-filter]
//	sudo pktfate demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `pktfate: what happened to the packet?

Usage:
  pktfate trace [flags] [pcap-filter]   show every packet the kernel frees, live
  pktfate serve [flags] [pcap-filter]   count fates for Prometheus (/metrics on 127.0.0.1:9816)
  pktfate top [flags] [pcap-filter]     a live table of drops by reason and location
  pktfate report [flags] FILE [filter]  summarise or list a capture (NDJSON, pcapng, recording)
  pktfate demo                          a self-contained demonstration (needs root)
  pktfate check [flags] SCENARIO...     run fate scenarios and report regressions (needs root)
  pktfate --version

Run "pktfate <command> -h" for the flags of a command.
`

// commands are pktfate's commands.
var commands = []string{"trace", "top", "report", "demo", "check"}

// usageError marks command-line mistakes (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// exitError ends the program with a status of its own, after what it is
// about was already printed (msg, when set, is printed too).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// stopSignals end a capture cleanly: the summary is written and every
// file finished. SIGHUP is a closed terminal (an ssh session gone), as
// tcpdump takes it.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

func realMain(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	// A write to a closed pipe (pktfate trace | head) must fail with
	// EPIPE, which ends the capture like a signal, instead of killing the
	// process: Go's runtime raises SIGPIPE for writes to stdout and
	// stderr unless the program asks for the signal itself.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	err := dispatch(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*exitError)):
		var ee *exitError
		errors.As(err, &ee)
		if ee.msg != "" {
			fmt.Fprintf(stderr, "pktfate: %s\n", ee.msg)
		}
		return ee.code
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(stderr, "pktfate: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "pktfate: %v\n", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErrorf("no command given")
	}
	switch args[0] {
	case "trace":
		cfg, err := parseTrace(args[1:], stderr)
		if err != nil {
			return err
		}
		return runTrace(ctx, cfg, stdout, stderr)
	case "serve":
		cfg, err := parseServe(args[1:], stderr)
		if err != nil {
			return err
		}
		return runServe(ctx, cfg, stderr)
	case "top":
		cfg, err := parseTraceOrTop(args[1:], stderr, true)
		if err != nil {
			return err
		}
		return runTop(ctx, cfg, stdout, stderr)
	case "report":
		cfg, err := parseReport(args[1:], stderr)
		if err != nil {
			return err
		}
		return runReport(ctx, cfg, stdout, stderr)
	case "check":
		cfg, err := parseCheck(args[1:], stderr)
		if err != nil {
			return err
		}
		return runCheck(ctx, cfg, stdout, stderr)
	case "demo":
		cfg, err := parseDemo(args[1:], stderr)
		if err != nil {
			return err
		}
		return runDemo(ctx, cfg, stdout, stderr)
	case "--version", "-version", "version":
		fmt.Fprintf(stdout, "pktfate %s\n", version)
		return nil
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	if near := nearest(args[0], commands, 2); len(near) > 0 {
		msg += "; did you mean " + orList(near) + "?"
	}
	return usageErrorf("%s (commands: %s; pktfate -h says more)", msg, strings.Join(commands, ", "))
}
