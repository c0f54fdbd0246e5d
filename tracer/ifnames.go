package tracer

import (
	"errors"
	"net"
	"time"

	"github.com/pktfate/pktfate/internal/netns"
)

// ifnameResolver names the interface of an event that has only its index
// and namespace: when the skb no longer holds its device (a socket-level
// drop, a read, a purged queue), the BPF program takes the index from
// skb_iif but cannot read the name. Names are looked up in the namespace,
// all of its interfaces at once, and cached; a namespace or index not
// found is not looked for again within a second. The first lookup of a
// namespace runs on the reading goroutine (a walk of /proc when only a
// descriptor holds the namespace); later events of it cost a map lookup.
// Not safe for concurrent use: the ebpf source's reading goroutine owns it.
type ifnameResolver struct {
	names  map[ifKey]string
	missed map[uint32]time.Time // by netns: when a lookup last failed
	paths  map[uint32]string    // netns inode -> a path to it
	listed time.Time
}

type ifKey struct{ netns, ifindex uint32 }

const (
	// ifnameMax bounds the cache: interfaces come and go in a long
	// capture.
	ifnameMax = 4096
	// ifnameRetry is how long a failed lookup is not repeated.
	ifnameRetry = time.Second
)

// name returns the interface name, or "" when it cannot be found.
func (r *ifnameResolver) name(ns, ifindex uint32) string {
	if ns == 0 || ifindex == 0 {
		return ""
	}
	if r.names == nil {
		r.names, r.missed = map[ifKey]string{}, map[uint32]time.Time{}
	}
	k := ifKey{ns, ifindex}
	if n, ok := r.names[k]; ok {
		return n
	}
	now := time.Now()
	if t, ok := r.missed[ns]; ok && now.Sub(t) < ifnameRetry {
		return ""
	}
	if !r.load(ns, now) {
		r.missed[ns] = now
		return ""
	}
	n, ok := r.names[k]
	if !ok {
		r.missed[ns] = now // an index the namespace no longer has
	}
	return n
}

// load reads every interface name of the namespace into the cache.
func (r *ifnameResolver) load(ns uint32, now time.Time) bool {
	path, ok := r.paths[ns]
	if !ok && now.Sub(r.listed) >= ifnameRetry {
		r.listed = now
		// Namespaces that are mounted or that a process is in first;
		// those only a descriptor holds (a container runtime's, a
		// test's) cost a walk of every process's descriptors.
		for _, fds := range []bool{false, true} {
			if all, err := listNetns(fds); err == nil {
				r.paths = all
				if path, ok = all[ns]; ok {
					break
				}
			}
		}
	}
	if !ok {
		return false
	}
	var ifs []net.Interface
	if err := netns.DoPath(path, func() error {
		// A path under /proc names another namespace once its
		// process or descriptor is gone and the number reused.
		if ino, err := netnsInode(""); err != nil || ino != ns {
			return errors.New("namespace moved")
		}
		var err error
		ifs, err = net.Interfaces()
		return err
	}); err != nil {
		delete(r.paths, ns)
		return false
	}
	if len(r.names)+len(ifs) > ifnameMax {
		clear(r.names)
	}
	for _, i := range ifs {
		r.names[ifKey{ns, uint32(i.Index)}] = i.Name
	}
	return true
}
