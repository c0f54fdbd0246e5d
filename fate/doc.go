// Package fate is pktfate's model: what every stage of a trace shares and
// nothing else. An Event is one observer's sighting of a freed packet; the
// Correlator joins the sightings of different observers into FateRecords,
// which say which observers agree about the packet's fate and why the
// others are silent; a Summary counts them with every loss counter; a
// Recording replays the correlator's input offline.
//
// Sources (package tracer) produce Events, renderers (internal/render) and
// the offline report (internal/report) consume them. This package imports
// no kernel code (no BPF, no netlink), so a renderer or `pktfate report`
// links none of it; make test checks that.
package fate
