// Package netns creates network namespaces, veth pairs, addresses and
// routes for pktfate's tests, demo and scenarios, without calling ip(8).
//
// Code that enters a namespace locks its goroutine to the OS thread first
// (runtime.LockOSThread): setns changes only the calling thread.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace created by New. It must be closed.
type NS struct {
	// Name is the namespace's name under /run/netns, or "" when anonymous.
	Name string
	// Inode identifies the namespace (what pktfate's --filter-netns takes).
	Inode  uint32
	handle vnetns.NsHandle
	nl     *netlink.Handle
}

// New creates a network namespace with its loopback up. A non-empty name
// also binds it under /run/netns (visible to `ip netns`), so it must be
// unique; Close removes it.
func New(name string) (ns *NS, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening current network namespace: %w", err)
	}
	defer orig.Close()
	var h vnetns.NsHandle
	if name != "" {
		h, err = vnetns.NewNamed(name)
	} else {
		h, err = vnetns.New()
	}
	// NewNamed and New switch this thread into the new namespace: go back.
	if serr := vnetns.Set(orig); serr != nil {
		// This thread is stuck in the wrong namespace; keep it locked so the
		// runtime discards it instead of reusing it.
		runtime.LockOSThread()
		return nil, fmt.Errorf("returning to the original network namespace: %w", serr)
	}
	if err != nil {
		return nil, fmt.Errorf("creating network namespace %q: %w", name, err)
	}
	created := &NS{Name: name, handle: h}
	defer func() {
		if err != nil {
			created.Close()
		}
	}()
	ns = created
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return nil, fmt.Errorf("stat of network namespace: %w", err)
	}
	ns.Inode = uint32(st.Ino)
	// NETLINK_ROUTE only: the default also opens NETLINK_XFRM, which needs
	// the xfrm_user module.
	ns.nl, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in network namespace: %w", err)
	}
	if err := ns.LinkUp("lo"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Close deletes the namespace (it disappears once nothing else uses it).
func (n *NS) Close() error {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	var errs []error
	if n.handle.IsOpen() {
		errs = append(errs, n.handle.Close())
	}
	if n.Name != "" {
		if err := vnetns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("deleting network namespace %q: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Do runs f on a thread inside the namespace. Sockets f opens stay in the
// namespace after f returns.
func (n *NS) Do(f func() error) error { return doIn(n.handle, f) }

// DoPath runs f on a thread inside the network namespace at path (a file
// under /run/netns, /proc/PID/ns/net...; "" is the current one).
func DoPath(path string, f func() error) error {
	if path == "" {
		return f()
	}
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer h.Close()
	if err := doIn(h, f); err != nil {
		return fmt.Errorf("in network namespace %s: %w", path, err)
	}
	return nil
}

// doIn runs f with the calling goroutine's thread in the namespace h and
// moves the thread back afterwards; a thread that cannot move back stays
// locked, so that the runtime terminates it.
func doIn(h vnetns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return fmt.Errorf("opening current network namespace: %w", err)
	}
	defer orig.Close()
	if err := vnetns.Set(h); err != nil {
		return fmt.Errorf("entering network namespace: %w", err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		runtime.LockOSThread()
		return errors.Join(ferr, fmt.Errorf("leaving network namespace: %w", err))
	}
	return ferr
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	var out []byte
	err := n.Do(func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		var err error
		out, err = cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	return out, err
}

// Sysctl writes a value under /proc/sys inside the namespace
// ("net/ipv4/ip_forward", "1").
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// Netlink returns a netlink handle bound to the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// LinkUp sets an interface up.
func (n *NS) LinkUp(ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("finding interface %s: %w", ifname, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", ifname, err)
	}
	return nil
}

// Ifindex returns the index of an interface in the namespace.
func (n *NS) Ifindex(ifname string) (int, error) {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("finding interface %s: %w", ifname, err)
	}
	return l.Attrs().Index, nil
}

// AddAddr adds an address ("10.0.0.1/24", "fd00::1/64") to an interface.
// IPv6 addresses skip duplicate address detection so they are usable at once.
func (n *NS) AddAddr(ifname, cidr string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("finding interface %s: %w", ifname, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("parsing address %q: %w", cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s to %s: %w", cidr, ifname, err)
	}
	return nil
}

// AddRoute adds a route to dst ("198.51.100.0/24" or "default") via gw
// (may be invalid for an on-link route), through ifname.
func (n *NS) AddRoute(dst string, gw netip.Addr, ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("finding interface %s: %w", ifname, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index}
	if dst != "default" {
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			return fmt.Errorf("parsing route destination %q: %w", dst, err)
		}
		_, r.Dst, _ = parseIPNet(p)
	} else if gw.Is6() {
		_, r.Dst, _ = parseIPNet(netip.MustParsePrefix("::/0"))
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("adding route %s via %s dev %s: %w", dst, gw, ifname, err)
	}
	return nil
}

// Veth creates a veth pair with one end in a and the other in b, both up.
func Veth(a *NS, aName string, b *NS, bName string) error {
	la := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.handle)),
	}
	if err := a.nl.LinkAdd(la); err != nil {
		return fmt.Errorf("creating veth pair %s/%s: %w", aName, bName, err)
	}
	if err := a.LinkUp(aName); err != nil {
		return err
	}
	return b.LinkUp(bName)
}

// SendUDP sends n datagrams to dst from an unconnected socket opened
// inside the namespace (network "udp4" or "udp6"): ICMP errors coming back
// do not fail later sends. A send refused by a local netfilter rule
// (EPERM) is not an error: the packet met its fate.
func (n *NS) SendUDP(network string, dst netip.AddrPort, count int, payload []byte) error {
	var conn *net.UDPConn
	if err := n.Do(func() error {
		var err error
		conn, err = net.ListenUDP(network, nil)
		return err
	}); err != nil {
		return fmt.Errorf("opening a UDP socket: %w", err)
	}
	defer conn.Close()
	for i := 0; i < count; i++ {
		if _, err := conn.WriteToUDPAddrPort(payload, dst); err != nil && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("packet %d to %v: %w", i, dst, err)
		}
	}
	return nil
}

// RemoveStale deletes named namespaces "<prefix><pid>-..." under
// /run/netns whose creating process no longer runs (a demo or check run
// that was killed). Namespaces of live processes are left alone.
func RemoveStale(prefix string) {
	names, _ := filepath.Glob("/run/netns/" + prefix + "*")
	for _, p := range names {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(p), prefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = unix.Unmount(p, unix.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
}
