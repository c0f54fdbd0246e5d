package ringrec

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock converts the kernel's CLOCK_MONOTONIC nanoseconds (what
// bpf_ktime_get_ns returns) to wall-clock time using an offset measured
// once. Later NTP steps are not followed: times stay consistent with each
// other within one capture.
type Clock struct {
	offset int64 // realtime - monotonic, ns
}

// NewClock measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC,
// keeping the tightest of a few samples.
func NewClock() Clock {
	best := int64(-1)
	var off int64
	for range 5 {
		var r1, m, r2 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &r1)
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m)
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &r2)
		span := r2.Nano() - r1.Nano()
		if best < 0 || span < best {
			best = span
			off = r1.Nano() + span/2 - m.Nano()
		}
	}
	return Clock{offset: off}
}

// FixedClock returns a Clock with a given offset, for tests and offline decoding.
func FixedClock(offset int64) Clock { return Clock{offset: offset} }

// Wall converts monotonic nanoseconds to wall-clock time.
func (c Clock) Wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+c.offset)
}

// Mono converts a wall-clock time to monotonic nanoseconds.
func (c Clock) Mono(t time.Time) uint64 {
	return uint64(t.UnixNano() - c.offset)
}

// MonoNow returns the current CLOCK_MONOTONIC time in nanoseconds.
func MonoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Offset returns CLOCK_REALTIME - CLOCK_MONOTONIC in ns, as measured.
func (c Clock) Offset() int64 { return c.offset }
