package tracer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Capability numbers from include/uapi/linux/capability.h.
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

func hasCap(caps uint64, c uint) bool { return caps&(1<<c) != 0 }

// checkBPFCaps returns an error naming the missing capabilities when the
// process can neither load tracing programs nor read kernel memory.
func checkBPFCaps() error {
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading process capabilities: %w", err)
	}
	if hasCap(caps, capSysAdmin) || (hasCap(caps, capBPF) && hasCap(caps, capPerfmon)) {
		return nil
	}
	return fmt.Errorf("missing CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root, e.g. with sudo: %w", os.ErrPermission)
}
