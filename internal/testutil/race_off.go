//go:build !race

package testutil

// Race is true in a binary built with the race detector, whose
// instrumentation allocates and slows what it watches.
const Race = false
