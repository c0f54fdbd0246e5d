package metrics

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Namer names network namespaces for the netns label, by the first rule
// that applies:
//
//  1. its name under /run/netns (`ip netns add NAME`), the
//     lexicographically first when it has several;
//  2. "COMM[PID]" of a process in it: the one named last time while it is
//     still there (a label does not move while its process lives), else
//     the lowest PID (a container's first process);
//  3. its inode number, as --filter-netns takes it: the last resort, for
//     a namespace no process is in and no name mounts (one held open by
//     a descriptor only).
//
// Names come from a scan of /run/netns and /proc/*/ns/net. Label scans
// when it meets an inode the table lacks, so a namespace is named from its
// first packet; an inode a scan did not find is labelled by its number
// and looked for again after MinScan, then after twice as long each time,
// up to MaxBackoff (a namespace held only by a descriptor costs a few
// scans, not one per packet). Refresh scans again: namespaces that went
// away leave the table, which holds only live ones. Safe for concurrent
// use.
type Namer struct {
	// RunNetns and Proc are where to look ("/run/netns", "/proc").
	RunNetns, Proc string
	// MinScan is how long an inode not found is labelled by its number
	// before it is looked for again (default 100ms); MaxBackoff bounds the
	// doubling (default 30s).
	MinScan, MaxBackoff time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu     sync.Mutex
	names  map[uint32]string
	pids   map[uint32]int // the process a rule-2 label names
	misses map[uint32]*miss
	scans  uint64
}

// miss is an inode a scan did not find.
type miss struct {
	label       string
	retry, used time.Time
	backoff     time.Duration
}

// NewNamer returns a Namer reading /run/netns and /proc.
func NewNamer() *Namer { return &Namer{RunNetns: "/run/netns", Proc: "/proc"} }

func (n *Namer) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

// Label returns the netns label of the namespace with this inode ("" for
// 0: the observer did not know the namespace).
func (n *Namer) Label(ino uint32) string {
	if ino == 0 {
		return ""
	}
	now := n.now()
	n.mu.Lock()
	if l, ok := n.names[ino]; ok {
		n.mu.Unlock()
		return l
	}
	m := n.misses[ino]
	if m != nil && now.Before(m.retry) {
		m.used = now
		n.mu.Unlock()
		return m.label
	}
	n.mu.Unlock()
	n.rescan()
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.names[ino]; ok {
		delete(n.misses, ino)
		return l
	}
	if m == nil {
		m = &miss{label: strconv.FormatUint(uint64(ino), 10), backoff: n.MinScan}
		if m.backoff <= 0 {
			m.backoff = 100 * time.Millisecond
		}
		if n.misses == nil {
			n.misses = map[uint32]*miss{}
		}
		n.misses[ino] = m
	} else {
		max := n.MaxBackoff
		if max <= 0 {
			max = 30 * time.Second
		}
		m.backoff = min(2*m.backoff, max)
	}
	m.retry, m.used = now.Add(m.backoff), now
	return m.label
}

// Lookup returns the label of a namespace as of the last scan and whether
// the scan found it (it exists, by name or by a process in it); it never
// scans.
func (n *Namer) Lookup(ino uint32) (label string, found bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.names[ino]; ok {
		return l, true
	}
	return strconv.FormatUint(uint64(ino), 10), false
}

// Scans returns how many scans were made.
func (n *Namer) Scans() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.scans
}

// Refresh scans /run/netns and /proc now, and forgets the inodes not
// found that were not met for MaxBackoff. The scan runs without the lock:
// Label answers from the last table meanwhile.
func (n *Namer) Refresh() {
	n.rescan()
	now := n.now()
	max := n.MaxBackoff
	if max <= 0 {
		max = 30 * time.Second
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for ino, m := range n.misses {
		if now.Sub(m.used) > max {
			delete(n.misses, ino)
		}
	}
}

func (n *Namer) rescan() {
	n.mu.Lock()
	prev := n.pids
	n.mu.Unlock()
	names, pids := n.scan(prev)
	n.mu.Lock()
	n.names, n.pids = names, pids
	n.scans++
	n.mu.Unlock()
}

// scan builds the table; prev is the last scan's process per namespace.
func (n *Namer) scan(prev map[uint32]int) (map[uint32]string, map[uint32]int) {
	names := map[uint32]string{}
	if ents, err := os.ReadDir(n.RunNetns); err == nil {
		for _, e := range ents { // sorted: the first name wins
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join(n.RunNetns, e.Name()), &st) != nil {
				continue
			}
			if _, ok := names[uint32(st.Ino)]; !ok {
				names[uint32(st.Ino)] = e.Name()
			}
		}
	}
	lowest := map[uint32]int{}
	kept := map[uint32]int{}
	procs, _ := os.ReadDir(n.Proc)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		ino, ok := netnsOfLink(filepath.Join(n.Proc, p.Name(), "ns", "net"))
		if !ok {
			continue
		}
		if _, named := names[ino]; named {
			continue
		}
		if prev[ino] == pid {
			kept[ino] = pid
		}
		if l, ok := lowest[ino]; !ok || pid < l {
			lowest[ino] = pid
		}
	}
	pids := map[uint32]int{}
	for ino, pid := range lowest {
		if k, ok := kept[ino]; ok {
			pid = k
		}
		comm, err := os.ReadFile(filepath.Join(n.Proc, strconv.Itoa(pid), "comm"))
		if err != nil {
			continue // gone since: named by another process next time
		}
		names[ino] = strings.TrimSpace(string(comm)) + "[" + strconv.Itoa(pid) + "]"
		pids[ino] = pid
	}
	return names, pids
}

// netnsOfLink reads a /proc/PID/ns/net link ("net:[4026531840]").
func netnsOfLink(path string) (uint32, bool) {
	l, err := os.Readlink(path)
	if err != nil || !strings.HasPrefix(l, "net:[") || !strings.HasSuffix(l, "]") {
		return 0, false
	}
	v, err := strconv.ParseUint(l[len("net:["):len(l)-1], 10, 32)
	return uint32(v), err == nil
}
