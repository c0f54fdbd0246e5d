package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring reads a BPF ring buffer in batches: it takes the producer position
// once, hands every committed record up to it to the caller straight from
// the shared mapping, and then publishes the consumer position once.
//
// cilium/ebpf's ringbuf.Reader copies each record and stores the consumer
// position after each one. That position shares a cache line the
// producer reads on every reservation: with a reader keeping pace, each
// event then costs the packet path a cache miss or two. Publishing once
// per batch leaves the line with the producer while it works.
type ring struct {
	mu      sync.Mutex // held while records are handed out; Close waits
	closed  bool
	waiting bool // in epoll_wait: the waiter closes epfd
	epfd    int
	cons    []byte // consumer page, read-write
	prod    []byte // producer page and the data pages, mapped twice
	data    []byte // the data, twice in a row: records never wrap
	mask    uint64
}

const (
	ringHdrSize    = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
)

func newRing(m *ebpf.Map) (*ring, error) {
	if m.Type() != ebpf.RingBuf {
		return nil, fmt.Errorf("map %s is a %s, not a ring buffer", m, m.Type())
	}
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	fd := m.FD()
	cons, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the ring buffer's consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("mapping the ring buffer's data: %w", err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		// Edge-triggered: wait returns on the producer's wakeups (every
		// wakeupEvery records), not whenever a record is there, so the
		// reader drains in large batches instead of chasing the producer.
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)})
		if err != nil {
			unix.Close(epfd)
		}
	}
	if err != nil {
		unix.Munmap(cons)
		unix.Munmap(prod)
		return nil, fmt.Errorf("polling the ring buffer: %w", err)
	}
	return &ring{epfd: epfd, cons: cons, prod: prod, data: prod[page:], mask: uint64(size - 1)}, nil
}

func (r *ring) consPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.cons[0])) }
func (r *ring) prodPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.prod[0])) }

// errRingClosed is returned once the ring is closed.
var errRingClosed = errors.New("ring buffer closed")

// wait blocks until the producer wakes the reader (or woke it since the
// last wait) or d passed.
func (r *ring) wait(d time.Duration) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errRingClosed
	}
	r.waiting = true
	r.mu.Unlock()
	var evs [1]unix.EpollEvent
	var err error
	for {
		_, err = unix.EpollWait(r.epfd, evs[:], int(d.Milliseconds()))
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting = false
	if r.closed {
		unix.Close(r.epfd)
		return errRingClosed
	}
	if err != nil {
		return fmt.Errorf("waiting for the ring buffer: %w", err)
	}
	return nil
}

// drain hands fn every committed record present now (the slice is only
// valid during the call) and returns how many; records the producer has
// reserved but not yet committed are left for the next drain.
func (r *ring) drain(fn func(sample []byte)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errRingClosed
	}
	cons := atomic.LoadUint64(r.consPos())
	prod := atomic.LoadUint64(r.prodPos())
	n := 0
	for cons < prod {
		off := cons & r.mask
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringBusyBit != 0 {
			break
		}
		size := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
		total := (size + ringHdrSize + 7) &^ 7
		if hdr&ringDiscardBit == 0 {
			start := off + ringHdrSize
			fn(r.data[start : start+size : start+size])
			n++
		}
		cons += total
	}
	atomic.StoreUint64(r.consPos(), cons)
	return n, nil
}

// Close unmaps the ring once no drain is running.
func (r *ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if !r.waiting {
		err = unix.Close(r.epfd)
	}
	return errors.Join(err, unix.Munmap(r.cons), unix.Munmap(r.prod))
}
