package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/pktfate/pktfate/internal/vm/artifact"
)

// kernelCmdline is the guests' kernel command line: serial console, panic
// powers off (-no-reboot turns the reboot into an exit), fast boot.
// loglevel=5 lets warnings (KERN_WARNING: WARN's "cut here" and "WARNING:
// CPU:") and messages at the default level (the "Oops:" header) reach the
// console, where the harness looks for them (ClassifyLine); notices and
// info stay off it.
const kernelCmdline = "console=ttyS0 panic=-1 quiet loglevel=5 mitigations=off nokaslr"

// afterMarker is how long QEMU may take to exit after the marker.
const afterMarker = 30 * time.Second

// BootSpec describes one VM.
type BootSpec struct {
	Kernel string // vmlinux (PVH entry) or bzImage
	Initrd string
	Prefix string        // prefix of each console line copied to Out
	Out    io.Writer     // console copy; must be safe for concurrent use with other VMs' writers
	Shell  bool          // attach the terminal to the serial console instead
	Limit  time.Duration // hard timeout, 0 for none
	// Artifacts receives the files the guest's tests send over the
	// console (package artifact); empty discards them.
	Artifacts string
	Machine   Machine
}

// Machine is the emulated machine; the zero value is the matrix's: two
// vCPUs, 1 GiB, TCG as fast as it goes.
type Machine struct {
	// ICount counts instructions (-icount shift=0,sleep=off): one
	// instruction is one nanosecond of guest time and idle time is
	// skipped, so guest-measured durations and rates are the same
	// whatever the host is doing. It implies one TCG thread.
	ICount bool
	CPUs   int    // vCPUs, default 2
	Memory string // -m, default 1G
}

func (m Machine) cpus() int {
	if m.CPUs > 0 {
		return m.CPUs
	}
	return 2
}

func (m Machine) memory() string {
	if m.Memory != "" {
		return m.Memory
	}
	return "1G"
}

// qemuArgs are QEMU's arguments: TCG (the host's /dev/kvm is PVM, which
// stock kernels do not boot on), no network, no reboot. TCG runs both
// vCPUs in one host thread: multi-threaded TCG let a vCPU execute a stale
// int3 that the kernel's live code patching (static keys, static calls)
// had already removed ("Oops: int3" in __schedule while modules and BPF
// programs came and went), and with two VMs at a time on two host cores it
// was no faster (cmd/pktfate's tests: 141 s single, 169 s multi).
//
// With Machine.ICount, sleep=off skips the guest's idle time instead of
// waiting it out in real time: a guest that sleeps 1 ms between two probe
// packets then costs no host time for it, and its clock never depends on
// the host's speed.
func qemuArgs(s BootSpec) []string {
	args := []string{"-accel", "tcg,thread=single", "-cpu", "max", "-m", s.Machine.memory(), "-smp", fmt.Sprint(s.Machine.cpus())}
	if s.Machine.ICount {
		args = append(args, "-icount", "shift=0,sleep=off")
	}
	return append(args,
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", s.Kernel, "-initrd", s.Initrd, "-append", kernelCmdline,
	)
}

// BootResult is what one VM reported.
type BootResult struct {
	RC       int  // the guest's status from the marker
	Reported bool // a marker was seen; false means the VM itself failed
	TimedOut bool
	Tail     []string // last console lines, for error reports
	// KernelErrors are the kernel's error reports on the console (oops,
	// WARN, lockups, panic...), and a taint the reports do not explain.
	KernelErrors []KernelError
	Taint        string // /proc/sys/kernel/tainted at the end, "" when not reported
}

// Boot runs one VM to completion, copying its console line by line to
// spec.Out with spec.Prefix, and returns the guest's result. The VM is
// killed at spec.Limit, or when it lingers after reporting.
func Boot(ctx context.Context, spec BootSpec) (BootResult, error) {
	if spec.Shell {
		return BootResult{}, bootShell(ctx, spec)
	}
	if spec.Limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, spec.Limit)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", qemuArgs(spec)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return BootResult{}, fmt.Errorf("starting qemu: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return BootResult{}, fmt.Errorf("starting qemu: %w", err)
	}
	res := copyConsole(stdout, spec, cmd)
	waitErr := cmd.Wait()
	res.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	if !res.Reported && waitErr != nil && !res.TimedOut && ctx.Err() != nil {
		return res, fmt.Errorf("running qemu: %w", ctx.Err())
	}
	return res, nil
}

// copyConsole streams the console until EOF, watching for the marker; once
// it is seen QEMU gets afterMarker to power off before it is killed.
func copyConsole(r io.Reader, spec BootSpec, cmd *exec.Cmd) BootResult {
	var res BootResult
	var scan MarkerScanner
	var klog KernelLogScanner
	arts := artifact.Scanner{Dir: spec.Artifacts}
	br := bufio.NewReaderSize(r, 64<<10)
	var killer *time.Timer
	for {
		line, err := br.ReadString('\n')
		if line != "" && !arts.Feed(strings.TrimRight(line, "\r\n")) {
			line = strings.TrimRight(line, "\r\n")
			fmt.Fprintf(spec.Out, "%s%s\n", spec.Prefix, line)
			scan.Feed(line)
			klog.Feed(line)
			res.Tail = append(res.Tail, line)
			if len(res.Tail) > 40 {
				res.Tail = res.Tail[1:]
			}
			if _, found := scan.Result(); found && killer == nil {
				killer = time.AfterFunc(afterMarker, func() { _ = cmd.Process.Kill() })
			}
		}
		if err != nil {
			break
		}
	}
	arts.Close()
	for _, p := range arts.Saved {
		fmt.Fprintf(spec.Out, "%sartifact saved: %s\n", spec.Prefix, p)
	}
	for _, e := range arts.Errs {
		fmt.Fprintf(spec.Out, "%sartifact lost: %v\n", spec.Prefix, e)
	}
	if killer != nil {
		killer.Stop()
	}
	res.RC, res.Reported = scan.Result()
	res.Taint = scan.Taint()
	res.KernelErrors = klog.Errors
	if e, ok := taintError(res.Taint, klog.Errors); ok {
		res.KernelErrors = append(res.KernelErrors, e)
	}
	return res
}

// bootShell runs QEMU with the terminal attached to the serial console
// (QEMU puts the terminal in raw mode; Ctrl-A x quits).
func bootShell(ctx context.Context, spec BootSpec) error {
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", qemuArgs(spec)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running qemu shell: %w", err)
	}
	return nil
}
