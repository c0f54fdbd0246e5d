package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pktfate/pktfate/tracer"
)

func inodeOf(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

func currentNetns() (uint32, error) {
	ino, err := inodeOf("/proc/thread-self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("reading the current network namespace: %w", err)
	}
	return ino, nil
}

// netnsTarget is one namespace of --filter-netns.
type netnsTarget struct {
	inode uint32
	// path opens it ("" when nothing found holds it open by a path).
	path string
}

// resolveNetnsList resolves every --filter-netns value, refusing a
// namespace that does not exist and keeping each one once.
func resolveNetnsList(specs []string) ([]netnsTarget, error) {
	var out []netnsTarget
	for _, s := range specs {
		t, err := resolveNetns(s)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(out, func(o netnsTarget) bool { return o.inode == t.inode }) {
			out = append(out, t)
		}
	}
	return out, nil
}

// resolveNetns turns one --filter-netns value (a name under /run/netns,
// an inode number, or a path) into the namespace's inode and, when one is
// known, a path to open it with.
func resolveNetns(s string) (netnsTarget, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		ino := uint32(n)
		if p := findNetnsPath(ino); p != "" {
			return netnsTarget{ino, p}, nil
		}
		// Held only by an open descriptor (a container runtime's), or
		// by nothing: then it does not exist.
		all, err := tracer.ListNetns()
		if err == nil {
			if p, ok := all[ino]; ok {
				return netnsTarget{ino, p}, nil
			}
		}
		return netnsTarget{}, usageErrorf("--filter-netns %s: no network namespace has inode %d (none is mounted under /run/netns or held by a process; ip netns list and lsns -t net show those that exist)", s, ino)
	}
	path := s
	if !strings.Contains(s, "/") {
		path = filepath.Join("/run/netns", s)
	}
	ino, err := netnsInodeOf(path)
	if err != nil {
		if !strings.Contains(s, "/") {
			msg := fmt.Sprintf("--filter-netns %s: no network namespace named %s under /run/netns", s, s)
			if near := nearest(s, netnsNamesList(), 3); len(near) > 0 {
				msg += "; did you mean " + orList(near) + "?"
			} else {
				msg += " (ip netns list shows the names; an inode number or a path such as /proc/PID/ns/net works too)"
			}
			return netnsTarget{}, usageErrorf("%s", msg)
		}
		return netnsTarget{}, usageErrorf("--filter-netns %s: not a network namespace (give a name under /run/netns, an inode number, or a path such as /proc/PID/ns/net): %v", s, err)
	}
	return netnsTarget{ino, path}, nil
}

// netnsInodeOf is the inode of the network namespace at path; a file that
// is not one is an error.
func netnsInodeOf(path string) (uint32, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	if st.Type != unix.NSFS_MAGIC {
		return 0, errors.New("no namespace file")
	}
	return inodeOf(path)
}

// netnsNamesList lists the names under /run/netns.
func netnsNamesList() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// findNetnsPath looks for a path to the namespace with this inode under
// /run/netns and /proc/*/ns/net.
func findNetnsPath(ino uint32) string {
	cands, _ := filepath.Glob("/run/netns/*")
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range append(cands, procs...) {
		if n, err := inodeOf(p); err == nil && n == ino {
			return p
		}
	}
	return ""
}

// netnsNames names namespaces by their inode from /run/netns (what ip
// netns shows), looking again at most once a second for one it does not
// know (a namespace created during the capture).
type netnsNames struct {
	mu    sync.Mutex
	names map[uint32]string
	last  time.Time
}

func newNetnsNames() *netnsNames {
	n := &netnsNames{}
	n.scan()
	return n
}

func (n *netnsNames) scan() {
	names := map[uint32]string{}
	for _, name := range netnsNamesList() {
		if ino, err := inodeOf(filepath.Join("/run/netns", name)); err == nil {
			if _, dup := names[ino]; !dup {
				names[ino] = name
			}
		}
	}
	n.names, n.last = names, time.Now()
}

// Name returns the namespace's name, or "" when it has none.
func (n *netnsNames) Name(ino uint32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	name, ok := n.names[ino]
	if !ok && time.Since(n.last) > time.Second {
		n.scan()
		name = n.names[ino]
	}
	return name
}

// resolveIfname finds the index of an interface in the namespace at
// nsPath ("" for the current one).
func resolveIfname(name, nsPath string) (int, error) {
	if name == "" {
		return 0, nil
	}
	h := &netlink.Handle{}
	if nsPath != "" {
		ns, err := vnetns.GetFromPath(nsPath)
		if err != nil {
			return 0, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns)
		if err != nil {
			return 0, fmt.Errorf("opening netlink in %s: %w", nsPath, err)
		}
		defer h.Close()
	}
	l, err := h.LinkByName(name)
	if err != nil {
		where := "the current network namespace"
		if nsPath != "" {
			where = nsPath
		}
		return 0, usageErrorf("--filter-ifname %q: no such interface in %s: %v", name, where, err)
	}
	return l.Attrs().Index, nil
}
