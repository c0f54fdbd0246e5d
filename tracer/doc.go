// Package tracer loads pktfate's event sources, reads what they observe and
// turns it into Events: one record per sk_buff the kernel freed, saying
// whether the packet was dropped (where and why) or consumed.
//
// Data flows one way: a Source produces Events, a Handler receives them, and
// code outside this package renders them. Sources know nothing about output
// formats.
package tracer
