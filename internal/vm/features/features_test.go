package features

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/mdlayher/genetlink"
	"golang.org/x/sys/unix"
)

// inVM skips the test on the host and returns the kernel line under test.
func inVM(t *testing.T) string {
	t.Helper()
	line := os.Getenv("PKTFATE_VM")
	if line == "" {
		t.Skip("PKTFATE_VM is unset: this test runs only inside the kernel-matrix VMs (make vmtest)")
	}
	return line
}

func TestNetDMFamily(t *testing.T) {
	inVM(t)
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Fatalf("dialing generic netlink: %v", err)
	}
	defer c.Close()
	fam, err := c.GetFamily("NET_DM")
	if err != nil {
		t.Fatalf("NET_DM family missing (drop_monitor not loaded?): %v", err)
	}
	if !slices.ContainsFunc(fam.Groups, func(g genetlink.MulticastGroup) bool { return g.Name == "events" }) {
		t.Errorf("NET_DM has no events multicast group: %+v", fam.Groups)
	}
	// Negative case: an unknown family must be reported as not existing.
	if _, err := c.GetFamily("PKTFATE_NOPE"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("GetFamily(unknown) = %v, want os.ErrNotExist", err)
	}
}

func TestHelloModuleLoads(t *testing.T) {
	inVM(t)
	dir := os.Getenv("PKTFATE_KMOD_DIR")
	if dir == "" {
		t.Fatal("PKTFATE_KMOD_DIR is unset: the harness built no module for this kernel")
	}
	load := func() error {
		f, err := os.Open(filepath.Join(dir, "hello.ko"))
		if err != nil {
			t.Fatalf("opening hello.ko: %v", err)
		}
		defer f.Close()
		return unix.FinitModule(int(f.Fd()), "", 0)
	}
	if err := load(); err != nil {
		t.Fatalf("loading hello.ko: %v", err)
	}
	if _, err := os.Stat("/sys/module/hello"); err != nil {
		t.Errorf("hello loaded but /sys/module/hello is missing: %v", err)
	}
	if err := load(); !errors.Is(err, unix.EEXIST) {
		t.Errorf("loading hello.ko twice = %v, want EEXIST", err)
	}
	if err := unix.DeleteModule("hello", unix.O_NONBLOCK); err != nil {
		t.Fatalf("unloading hello: %v", err)
	}
	if _, err := os.Stat("/sys/module/hello"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hello unloaded but /sys/module/hello remains: %v", err)
	}
}

// dropFunction is the function kfree_skb drops go through: renamed in 6.11.
func dropFunction(t *testing.T, spec *btf.Spec) string {
	t.Helper()
	for _, name := range []string{"sk_skb_reason_drop", "kfree_skb_reason"} {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err == nil {
			return name
		}
	}
	t.Fatal("kernel BTF has neither sk_skb_reason_drop nor kfree_skb_reason")
	return ""
}

func fentryProgram(target string) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Name:         "pktfate_fentry",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFEntry,
		AttachTo:     target,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	}
}

func TestFentryAttach(t *testing.T) {
	line := inVM(t)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("loading kernel BTF: %v", err)
	}
	drop := dropFunction(t, spec)
	want := map[string]string{"6.1": "kfree_skb_reason", "6.12": "sk_skb_reason_drop", "7.2": "sk_skb_reason_drop"}
	if w, ok := want[line]; ok && drop != w {
		t.Errorf("drop function on %s is %s, want %s", line, drop, w)
	}
	for _, target := range []string{drop, "nf_hook_slow"} {
		t.Run(target, func(t *testing.T) {
			prog, err := ebpf.NewProgram(fentryProgram(target))
			if err != nil {
				t.Fatalf("loading fentry program for %s: %v", target, err)
			}
			defer prog.Close()
			l, err := link.AttachTracing(link.TracingOptions{Program: prog})
			if err != nil {
				t.Fatalf("attaching fentry to %s: %v", target, err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("detaching fentry from %s: %v", target, err)
			}
		})
	}
	t.Run("unknown target", func(t *testing.T) {
		prog, err := ebpf.NewProgram(fentryProgram("pktfate_no_such_function"))
		if err == nil {
			prog.Close()
			t.Fatal("loading fentry program for a missing function succeeded")
		}
	})
}

// wantNetfilterLink says whether the line's kernel must have BPF netfilter
// links (program type added in 6.4).
func wantNetfilterLink(t *testing.T, line string) bool {
	switch line {
	case "6.1":
		return false
	case "6.12", "7.2":
		return true
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	major, minor := kernelVersion(unix.ByteSliceToString(u.Release[:]))
	return major > 6 || major == 6 && minor >= 4
}

// kernelVersion parses "6.12.95+deb12-amd64" into 6, 12.
func kernelVersion(release string) (major, minor int) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	digits := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if digits >= 0 {
		parts[1] = parts[1][:digits]
	}
	major, _ = strconv.Atoi(parts[0])
	minor, _ = strconv.Atoi(parts[1])
	return major, minor
}

func TestNetfilterLink(t *testing.T) {
	line := inVM(t)
	haveErr := features.HaveProgramType(ebpf.Netfilter)
	spec := &ebpf.ProgramSpec{
		Name:         "pktfate_nf",
		Type:         ebpf.Netfilter,
		AttachType:   ebpf.AttachNetfilter,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}, // NF_ACCEPT
		License:      "GPL",
	}
	if !wantNetfilterLink(t, line) {
		if !errors.Is(haveErr, ebpf.ErrNotSupported) {
			t.Fatalf("HaveProgramType(Netfilter) on %s = %v, want ebpf.ErrNotSupported", line, haveErr)
		}
		if prog, err := ebpf.NewProgram(spec); err == nil {
			prog.Close()
			t.Fatalf("loading a netfilter program on %s succeeded, want failure", line)
		}
		return
	}
	if haveErr != nil {
		t.Fatalf("HaveProgramType(Netfilter) on %s: %v", line, haveErr)
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatalf("loading netfilter program: %v", err)
	}
	defer prog.Close()
	l, err := link.AttachNetfilter(link.NetfilterOptions{
		Program:        prog,
		ProtocolFamily: link.NetfilterProtoIPv4,
		Hook:           link.NetfilterInetLocalOut,
		Priority:       -128,
	})
	if err != nil {
		t.Fatalf("attaching netfilter link: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("closing netfilter link: %v", err)
	}
}

// TestGuestTools checks that the harness shipped the host tools with their
// shared libraries and symlink names, and that the tables they need load.
func TestGuestTools(t *testing.T) {
	inVM(t)
	cmds := [][]string{
		{"ip", "-V"}, // iproute2's, not busybox's applet
		{"nft", "list", "ruleset"},
		{"iptables-legacy", "-w", "-t", "mangle", "-L", "-n"},
		{"ip6tables-legacy", "-w", "-t", "filter", "-L", "-n"},
		{"iptables-nft", "-w", "-L", "-n"},
		{"ip6tables-nft", "-w", "-L", "-n"},
		{"tcpdump", "--version"},
	}
	for _, c := range cmds {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
		if c[0] == "ip" && !strings.Contains(string(out), "iproute2") {
			t.Errorf("ip is not iproute2's: %s", out)
		}
	}
	if bin := os.Getenv("PKTFATE_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Errorf("PKTFATE_BIN=%s: %v", bin, err)
		}
	}
	if _, err := exec.LookPath("pktfate-no-such-tool"); err == nil {
		t.Error("LookPath found a tool that does not exist")
	}
}
