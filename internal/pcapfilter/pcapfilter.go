// Package pcapfilter compiles tcpdump/pcap-filter expressions with
// libpcap's own compiler (cgo, via gopacket's pcap package) and runs the
// resulting classic BPF program in user space with golang.org/x/net/bpf.
//
// Captured bytes start at the network header, so the filter is compiled
// for Ethernet (DLT_EN10MB) and a 14-byte Ethernet header carrying the
// packet's EtherType is put in front of them: every expression tcpdump
// accepts on an Ethernet capture works ("udp port 53", "icmp6", "arp",
// "portrange 1-1024", "ip[8] < 5"). MAC addresses in that header are zero.
//
// Like tcpdump with -s, a filter reading past the captured bytes does not
// match: raise the snap length for expressions that look deep into payloads.
package pcapfilter

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcap"
	"golang.org/x/net/bpf"
)

// CompileSnapLen is the capture length the expression is compiled for.
const CompileSnapLen = 262144

const ethHeaderLen = 14

var zeroMACs [12]byte

// Filter is a compiled expression. Not safe for concurrent use.
type Filter struct {
	expr    string
	vm      *bpf.VM
	program []bpf.RawInstruction
	buf     []byte
}

// Compile compiles a pcap-filter expression. An empty expression gives a
// nil Filter, which matches everything. The error carries libpcap's
// message.
func Compile(expr string) (*Filter, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, nil
	}
	insns, err := pcap.CompileBPFFilter(layers.LinkTypeEthernet, CompileSnapLen, expr)
	if err != nil {
		return nil, fmt.Errorf("bad filter expression %q: %s", expr, strings.TrimPrefix(err.Error(), "can't compile BPF filter: "))
	}
	raw := make([]bpf.RawInstruction, len(insns))
	for i, in := range insns {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		return nil, fmt.Errorf("filter expression %q needs a Linux BPF extension that pktfate cannot run in user space; filter on header fields instead", expr)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		return nil, fmt.Errorf("filter expression %q compiled to a program that cannot run: %w", expr, err)
	}
	return &Filter{expr: expr, vm: vm, program: raw, buf: make([]byte, 0, ethHeaderLen+512)}, nil
}

// String returns the expression.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.expr
}

// Program returns the compiled classic BPF program.
// A nil Filter has none.
func (f *Filter) Program() []bpf.RawInstruction {
	if f == nil {
		return nil
	}
	return f.program
}

// Match reports whether a packet matches. data starts at the network header
// unless mac is set (then at the Ethernet header); etherType is the
// packet's protocol in host byte order. A nil Filter matches everything.
func (f *Filter) Match(etherType uint16, data []byte, mac bool) bool {
	if f == nil {
		return true
	}
	pkt := data
	if !mac {
		f.buf = append(f.buf[:0], zeroMACs[:]...)
		f.buf = binary.BigEndian.AppendUint16(f.buf, etherType)
		f.buf = append(f.buf, data...)
		pkt = f.buf
	}
	n, err := f.vm.Run(pkt)
	return err == nil && n > 0
}
