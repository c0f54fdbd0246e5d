// Package scenario reads, runs and checks pktfate's fate scenarios: small
// self-contained network set-ups (namespaces, veth pairs, routes, sysctls,
// netfilter rules), the traffic to send through them and the fates the
// packets are expected to meet. `pktfate check` runs them to tell whether a
// kernel (or a ruleset) changes what happens to packets.
//
// The format is documented in docs/scenarios.md; the library lives in
// testdata/scenarios. Parse and Compare are pure Go; Runner needs root
// and a kernel pktfate can trace.
package scenario
