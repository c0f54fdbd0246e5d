package vm

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// GuestModules are the kernel modules every guest loads at boot (those a
// kernel has built in, or lacks, are skipped). Their dependency closure is
// computed from each module's .modinfo.
var GuestModules = []string{
	"veth", "nfnetlink", "nf_tables", "nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6",
	"nf_reject_ipv4", "nf_reject_ipv6", "nft_reject", "nft_reject_inet", "nft_reject_ipv4", "nft_reject_ipv6",
	"nft_ct", "nft_log", "nft_limit", "nft_quota", "nft_fib", "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6", "nft_compat",
	"x_tables", "ip_tables", "ip6_tables", "iptable_filter", "ip6table_filter", "ipt_REJECT", "ip6t_REJECT",
	"iptable_mangle", "ip6table_mangle", "iptable_raw", "ip6table_raw", "iptable_nat", "ip6table_nat",
	"xt_tcpudp", "xt_mark", "xt_conntrack", "xt_comment", "xt_state", "xt_multiport", "xt_addrtype", "xt_LOG",
	"nf_log_syslog", "drop_monitor", "ipv6",
	// vishvananda/netlink's NewHandle opens NETLINK_XFRM sockets too; the
	// guests have no modprobe, so nothing is autoloaded on demand.
	"xfrm_user", "dummy", "sch_ingress", "cls_bpf", "act_bpf",
	// Bridge-family chains (genl/kmod's kernel tests, the scenario
	// library's bridges; nft_meta_bridge for rules of the bridge family),
	// packets held by an NFQUEUE reader, VXLAN tunnels. br_netfilter stays
	// out: the guests bridge without it.
	"bridge", "nfnetlink_queue", "nft_queue", "nft_meta_bridge", "nft_reject_bridge", "vxlan",
}

// guest paths
const (
	guestModDir   = "/usr/lib/modules/pktfate"
	guestModOrder = "/etc/pktfate/modules"
	guestRunner   = "/pktfate/run.sh"
	guestBash     = "/usr/bin/bash"
)

// initScript is the guest's /init (busybox sh). It mounts what tests need,
// loads the modules in order, runs the payload's /pktfate/run.sh and ends
// with the result marker on /dev/kmsg and the console, then poweroff -f.
// The marker is written to kmsg first: poweroff -f can cut the console's
// last line.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=vt100
mount -t proc proc /proc
echo "pktfate-vm: /init started at $(cut -d' ' -f1 /proc/uptime)s"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null
modfail=0
while read -r m; do
	[ -n "$m" ] || continue
	out=$(insmod "$m" 2>&1) || { echo "pktfate-vm: insmod $m failed: $out"; modfail=1; }
done < ` + guestModOrder + `
echo "pktfate-vm: $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s, modules loaded"
rc=0
# busybox sh prefers its own applets (ip, ...) over PATH: run the payload
# with bash when shipped, so tools resolve to the real binaries.
shell=sh
[ -x ` + guestBash + ` ] && shell=` + guestBash + `
if [ -f ` + guestRunner + ` ]; then
	$shell ` + guestRunner + `
	rc=$?
else
	echo "pktfate-vm: no ` + guestRunner + ` in the initramfs"
	rc=3
fi
if [ "$modfail" = 1 ] && [ "$rc" = 0 ]; then
	echo "pktfate-vm: tests passed but some modules failed to load"
	rc=4
fi
sync
taint=$(cat /proc/sys/kernel/tainted 2>/dev/null || echo 0)
echo "<2>` + markerPrefix + ` rc=$rc taint=$taint END" > /dev/kmsg
echo "` + markerPrefix + ` rc=$rc taint=$taint END"
sleep 0.2
poweroff -f
`

// Files copied from the host into every guest when present.
var hostEtcFiles = []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"}

// BuildBase returns the kernel's base initramfs, building it when the cache
// holds none for the current contents (busybox, /init, the module closure).
// The base holds no project files; a payload archive is appended per run.
func BuildBase(k Kernel, wanted []string, log io.Writer) (string, error) {
	tree, err := OpenModuleTree(k.ModulesDir())
	if err != nil {
		return "", err
	}
	order, missing, err := ModuleClosure(wanted, tree.Lookup)
	if err != nil {
		return "", fmt.Errorf("computing module closure for %s: %w", k.Release, err)
	}
	if len(missing) > 0 {
		logf(log, "%s: not loadable (built in or absent): %s", k.Line.Name, strings.Join(missing, " "))
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\n%s\n%d\n", initScript, strings.Join(order, ","), len(busybox))
	sum.Write(busybox)
	path := filepath.Join(k.Dir, "base-"+hex.EncodeToString(sum.Sum(nil))[:16]+".cpio")
	if fileExists(path) {
		return path, nil
	}
	if err := writeBase(path, busybox, order, tree); err != nil {
		return "", err
	}
	pruneBases(k.Dir, path)
	return path, nil
}

// pruneBases removes base archives of earlier harness versions.
func pruneBases(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "base-*.cpio"))
	for _, p := range old {
		if p != keep {
			os.Remove(p)
		}
	}
}

// writeBase writes the base archive atomically (temp file + rename).
func writeBase(path string, busybox []byte, order []string, tree *ModuleTree) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("creating base initramfs: %w", err)
	}
	defer os.Remove(tmp)
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fillBase(NewCPIOWriter(bw), busybox, order, tree); err != nil {
		f.Close()
		return fmt.Errorf("writing base initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing base initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing base initramfs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("storing base initramfs: %w", err)
	}
	return nil
}

func fillBase(c *CPIOWriter, busybox []byte, order []string, tree *ModuleTree) error {
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "etc/pktfate", "usr/lib64", "usr/bin", "usr/sbin", "usr/local/bin"} {
		c.Dir(d, 0)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.Symlink("lib", "usr/lib")
	c.Symlink("lib64", "usr/lib64")
	c.File("bin/busybox", 0o755, busybox)
	c.File("init", 0o755, []byte(initScript))
	c.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\ntcpdump:x:107:113::/nonexistent:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	c.File("etc/group", 0o644, []byte("root:x:0:\ntcpdump:x:113:\nnogroup:x:65534:\n"))
	c.File("etc/nsswitch.conf", 0o644, []byte("passwd: files\ngroup: files\nhosts: files\nprotocols: files\nservices: files\n"))
	c.File("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost\n"))
	for _, f := range hostEtcFiles {
		if data, err := os.ReadFile(f); err == nil {
			c.File(f, 0o644, data)
		}
	}
	var list strings.Builder
	for _, name := range order {
		img, err := tree.Image(name)
		if err != nil {
			return err
		}
		p := guestModDir + "/" + name + ".ko"
		if err := c.File(p, 0o644, img); err != nil {
			return err
		}
		list.WriteString(p + "\n")
	}
	c.File(guestModOrder, 0o644, []byte(list.String()))
	return c.Close()
}
