// Package features holds tests that run inside the kernel-matrix VMs
// (internal/vm) and check that each guest kernel offers what pktfate relies
// on: the NET_DM generic netlink family, loadable out-of-tree modules,
// fentry, and BPF netfilter links (6.4+). On the host (PKTFATE_VM unset)
// every test skips.
package features
