// Package vm runs pktfate's Go tests inside real Debian kernels under QEMU
// (TCG), one VM per kernel line, so that features the host kernel lacks
// (drop_monitor, loadable modules, fentry, BPF netfilter links on older
// kernels) are tested against the kernels users run.
//
// The pipeline for one kernel line (see [Run]):
//
//  1. resolve: a private apt configuration (never the host's lists) resolves
//     the newest kernel of the line's suite through the linux-image-amd64 and
//     linux-headers-amd64 metapackages ([Resolver]);
//  2. download: apt-get download + dpkg-deb -x into the cache ([FetchKernel]);
//     nothing is ever installed into the host;
//  3. initramfs: a cached per-kernel base archive (busybox, /init, kernel
//     modules in dependency order, see [ModuleClosure]) followed by a
//     per-run payload archive (test binaries, pktfate, host tools and their
//     shared libraries, testdata/), concatenated ([BuildBase], [Payload]);
//  4. boot+tests: QEMU boots the uncompressed vmlinux through its PVH entry
//     ([ExtractVmlinux]); /init runs each test binary and reports with a
//     marker line on the console and in /dev/kmsg ([ParseMarker]); the
//     console is scanned for kernel error reports ([ClassifyLine],
//     [KernelLogScanner]), which fail the line whatever the tests said.
//
// The cache lives in /var/cache/pktfate-vm unless PKTFATE_VM_CACHE says
// otherwise; it is kept between runs and is safe to delete.
//
// Code in this package runs on the host only; tests that run inside the VMs
// read PKTFATE_VM and friends (see [GuestEnv]).
package vm
