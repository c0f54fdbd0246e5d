// Package metrics turns a capture that never ends into Prometheus metrics:
// packets dropped and consumed (counted once, however many observers saw
// them), fate verdicts, each observer's part, the loss ledger and whether
// each source is complete and up. It is what `pktfate serve` exposes;
// docs/metrics.md is the contract of names and labels.
//
// A Metrics is fed as a render.Renderer by the capture pipeline (events
// when one observer runs, fate records when several are correlated) and
// by Tick with the ledger; it is a prometheus.Collector for the registry
// that /metrics serves. Label sets are bounded per metric: past the limit
// a new set has its open labels (location, netns, interface) folded into
// Overflow and the fold is counted; series of network namespaces that are
// gone are removed after a while. Network namespaces are named by Namer.
//
// Like the other consumers of the model, it links no BPF or netlink code.
package metrics
