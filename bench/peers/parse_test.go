package peers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures in testdata are the head and tail of each tool's output in
// the 6.1 (6.1.0-50-amd64) and 6.12 (6.12.95+deb12-amd64) guests, as
// peersguest sends them (raw-*.txt); each says on its first line what it
// is.
func fixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// names61 are 6.1's numbers for the reasons the benchmark sees (its
// kfree_skb format file; 6.12 numbers them 3 and 16).
var (
	names61  = map[int]string{2: "NO_SOCKET", 15: "SOCKET_RCVBUFF"}
	names612 = map[int]string{3: "NO_SOCKET", 16: "SOCKET_RCVBUFF"}
)

func TestParseReasonNames(t *testing.T) {
	format := `name: kfree_skb
ID: 1419
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:enum skb_drop_reason reason;	offset:28;	size:4;	signed:0;

print fmt: "skbaddr=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, "NOT_SPECIFIED" }, { 2, "NO_SOCKET" }, { 15, "SOCKET_RCVBUFF" }, { 76, "MAX" })
`
	names, err := ParseReasonNames(format)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 4 || names[2] != "NO_SOCKET" || names[15] != "SOCKET_RCVBUFF" {
		t.Errorf("names = %v", names)
	}
	if _, err := ParseReasonNames("print fmt: \"skbaddr=%p\", REC->skbaddr\n"); err == nil {
		t.Error("a format without reasons parsed")
	}
}

func TestParseSNMP(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 2 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 12 67152 1175 67177 1175 0 0 0 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"UdpLite: 0 0 0 0 0 0 0 0 0\n"
	s, err := ParseSNMP(snmp)
	if err != nil || s.NoPorts != 67152 || s.RcvbufErrors != 1175 {
		t.Errorf("ParseSNMP = %+v, %v", s, err)
	}
	if _, err := ParseSNMP("Ip: a\nIp: 1\n"); err == nil {
		t.Error("no Udp lines parsed")
	}
}

func TestPerfOutput(t *testing.T) {
	out := fixture(t, "perf-6.1.txt")
	// perf 6.1 prints the location as a bare address: the reason classes.
	c, err := PerfScript(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if c.Flood != 40 || c.Probe != 40 || c.Other != 0 {
		t.Errorf("perf script counts %+v, want the fixture's 40 NO_SOCKET and 40 SOCKET_RCVBUFF lines", c)
	}
	samples, lost, err := PerfRecord(out)
	if err != nil || samples != 61376 || lost != 0 {
		t.Errorf("PerfRecord = %d samples, %d lost, %v; want 61376, 0", samples, lost, err)
	}
	_, lost, err = PerfRecord("[ perf record: Captured and wrote 5.6 MB perf.data (61376 samples) ]\nWarning:\nProcessed 61400 events and lost 3 chunks!\n")
	if err != nil || lost != 3 {
		t.Errorf("lost chunks: %d, %v; want 3", lost, err)
	}
	if _, _, err := PerfRecord("perf: permission denied\n"); err == nil {
		t.Error("perf output without its closing line parsed")
	}
	// 6.12's perf resolves the location; rx_sk comes before protocol.
	out = fixture(t, "perf-6.12.txt")
	c, err = PerfScript(strings.NewReader(out))
	if err != nil || c != (Counts{Flood: 40, Probe: 40}) {
		t.Errorf("6.12 perf script counts %+v, %v; want 40 and 40", c, err)
	}
	if samples, _, err := PerfRecord(out); err != nil || samples != 131038 {
		t.Errorf("6.12 PerfRecord = %d, %v; want 131038", samples, err)
	}
	c, _ = PerfScript(strings.NewReader("skbaddr=0xffff8880 rx_sk=(nil) protocol=2048 location=__udp4_lib_rcv+0x9a2 reason: NO_SOCKET\n" +
		"skbaddr=0xffff8881 rx_sk=0xffff88 protocol=2048 location=udp_queue_rcv_one_skb+0x409 reason: SOCKET_RCVBUFF\n" +
		"skbaddr=0xffff8882 rx_sk=(nil) protocol=34525 location=ip6_mc_input+0x1 reason: IP_INADDRERRORS\n"))
	if c != (Counts{Flood: 1, Probe: 1, Other: 1}) {
		t.Errorf("6.12 lines counted %+v", c)
	}
}

func TestBpftraceOutput(t *testing.T) {
	c, lost, err := BpftraceMap(strings.NewReader(fixture(t, "bpftrace-map-6.1.txt")), names61)
	if err != nil || c.Flood != 63280 || c.Probe != 1175 || c.Other != 0 || lost != 0 {
		t.Errorf("bpftrace map: %+v lost %d %v; want 63280 flood, 1175 probes", c, lost, err)
	}
	// The same drops are numbered 3 and 16 on 6.12.
	c, _, err = BpftraceMap(strings.NewReader(fixture(t, "bpftrace-map-6.12.txt")), names612)
	if err != nil || c != (Counts{Flood: 135392, Probe: 1956}) {
		t.Errorf("6.12 bpftrace map: %+v %v", c, err)
	}
	// Names instead of numbers, and an unknown number, are read too.
	c, _, err = BpftraceMap(strings.NewReader("@[SKB_DROP_REASON_NO_SOCKET]: 5\n@[99]: 2\n"), names61)
	if err != nil || c != (Counts{Flood: 5, Other: 2}) {
		t.Errorf("named map: %+v %v", c, err)
	}
	if _, _, err := BpftraceMap(strings.NewReader("Attaching 1 probe...\n"), names61); err == nil {
		t.Error("bpftrace output without a map parsed")
	}
	c, lost, err = BpftracePrintf(strings.NewReader(fixture(t, "bpftrace-printf-6.1.txt")), names61)
	if err != nil || c.Flood != 38 || c.Probe != 39 || lost != 0 {
		t.Errorf("bpftrace printf: %+v lost %d %v; want the fixture's 38 and 39 lines", c, lost, err)
	}
	_, lost, _ = BpftracePrintf(strings.NewReader("2\nLost 1234 events\n2\nLost 6 events\n"), names61)
	if lost != 1240 {
		t.Errorf("bpftrace lost = %d, want 1240", lost)
	}
}

func TestDropwatchOutput(t *testing.T) {
	c, loss, err := Dropwatch(strings.NewReader(fixture(t, "dropwatch-6.1.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Flood != 3 || c.Probe != 3 || c.Other != 0 {
		t.Errorf("dropwatch counts %+v, want the fixture's 3 and 3 alerts", c)
	}
	if loss.TailDropped != 0 || loss.Overruns != 122 {
		t.Errorf("dropwatch loss %+v, want 0 tail drops and the fixture's 122 ENOBUFS", loss)
	}
	// 6.12: dropwatch killed mid-alert (it never exited after SIGINT): the
	// cut last alert counts as other, one ENOBUFS, no stats.
	c, loss, err = Dropwatch(strings.NewReader(fixture(t, "dropwatch-6.12.txt")))
	if err != nil || c != (Counts{Flood: 5, Probe: 3, Other: 1}) || loss != (DropwatchLoss{Overruns: 1}) {
		t.Errorf("6.12 dropwatch: %+v %+v %v", c, loss, err)
	}
	// Without a reason line the location classes the alert.
	c, loss, _ = Dropwatch(strings.NewReader("drop at: __udp4_lib_rcv+0x9a2/0xb50 (0xffffffff818b4f12)\norigin: software\n\n" +
		"drop at: udp_queue_rcv_one_skb+0x409/0x570 (0xffffffff818b2489)\n\nSoftware statistics:\nTail dropped: 17\n"))
	if c != (Counts{Flood: 1, Probe: 1}) || loss.TailDropped != 17 {
		t.Errorf("reasonless alerts: %+v %+v", c, loss)
	}
}

func TestPktfateOutput(t *testing.T) {
	c, lost, err := Pktfate(strings.NewReader(fixture(t, "pktfate-auto-6.1.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Flood != 19776 || c.Probe != 710 || c.Other != 0 {
		t.Errorf("pktfate counts %+v, want the summary's 19776 NO_SOCKET and 710 SOCKET_RCVBUFF", c)
	}
	if lost["dropmon_socket_overrun"] != 1 || len(lost) < 5 {
		t.Errorf("lost counters %v", lost)
	}
	if _, _, err := Pktfate(strings.NewReader(`{"type":"event","drops":1}` + "\n")); err == nil {
		t.Error("output without a summary parsed")
	}
	if _, _, err := Pktfate(strings.NewReader(`{"type":"summary","drops":3,"by_reason":{"NO_SOCKET":2}}` + "\n")); err == nil {
		t.Error("a summary whose by_reason does not add up to drops parsed")
	}
}

func TestParseFloodAndProbes(t *testing.T) {
	f, err := ParseFlood("flood sent=67137 errors=0 ns=2000001234\n")
	if err != nil || f.Sent != 67137 || f.PPS() < 33568 || f.PPS() > 33569 {
		t.Errorf("ParseFlood = %+v (%.1f pps), %v", f, f.PPS(), err)
	}
	if _, err := ParseFlood("flood: socket: Operation not permitted\n"); err == nil {
		t.Error("a failed flood parsed")
	}
	p, err := ParseProbeTimes("100\n200\n300\n")
	if err != nil || len(p) != 3 {
		t.Errorf("ParseProbeTimes = %v, %v", p, err)
	}
	if _, err := ParseProbeTimes("300\n200\n"); err == nil {
		t.Error("probe times out of order parsed")
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		reason, fn string
		want       Class
	}{
		{"NO_SOCKET", "", Flood},
		{"SKB_DROP_REASON_NO_SOCKET", "x", Flood},
		{"SOCKET_RCVBUFF", "", Probe},
		{"NETFILTER_DROP", "__udp4_lib_rcv", Other},
		{"", "__udp4_lib_rcv", Flood},
		{"", "udp_queue_rcv_one_skb", Probe},
		{"", "__udp_enqueue_schedule_skb", Probe},
		{"", "tcp_v4_rcv", Other},
	} {
		if got := Classify(tt.reason, tt.fn); got != tt.want {
			t.Errorf("Classify(%q, %q) = %d, want %d", tt.reason, tt.fn, got, tt.want)
		}
	}
}

// TestPktfateLostList: since schema 1 the summary's ledger is a list.
func TestPktfateLostList(t *testing.T) {
	line := `{"type":"summary","schema":1,"drops":5,"by_reason":{"NO_SOCKET":5},"lost":[{"observer":"ebpf","name":"ringbuf_full","value":3},{"observer":"ebpf","name":"decode_errors","value":0}]}` + "\n"
	c, lost, err := Pktfate(strings.NewReader(line))
	if err != nil || c.Flood != 5 || lost["ebpf_ringbuf_full"] != 3 || len(lost) != 2 {
		t.Errorf("Pktfate = %+v, %v, %v; want 5 flood drops, ebpf_ringbuf_full 3 of two counters", c, lost, err)
	}
}
