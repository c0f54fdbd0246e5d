package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

// resolveNetns turns --filter-netns (an inode number, a name under
// /run/netns, or a path) into an inode and, when one is known, a path to
// open the namespace with.
func resolveNetns(s string) (uint32, string, error) {
	if s == "" {
		return 0, "", nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), findNetnsPath(uint32(n)), nil
	}
	path := s
	if !strings.Contains(s, "/") {
		path = filepath.Join("/run/netns", s)
	}
	ino, err := inodeOf(path)
	if err != nil {
		return 0, "", usageErrorf("--filter-netns %q: no such network namespace (give an inode number, a name under /run/netns, or a path such as /proc/PID/ns/net): %v", s, err)
	}
	return ino, path, nil
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
