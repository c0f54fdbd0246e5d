// Command udpflood measures what `pktfate trace` costs and captures under
// the worst case it is built for: one core sending UDP to a closed port as
// fast as it can, every packet dropped with NO_SOCKET.
//
// It creates its own network namespace, floods 127.0.0.1:9 from a sender
// process pinned to one CPU for a fixed time, without and with pktfate trace
// attached (filtered to that namespace; the scheduler places pktfate unless
// -tracer-cpu pins it), and prints the sender's rate each time, the kernel's
// own count of the drops (/proc/net/snmp Udp NoPorts), how many drops
// pktfate reported and how many it counted as lost, pktfate's CPU time and
// the whole machine's busy time per packet (/proc/stat).
//
// With -target veth the packets cross a veth pair into a second namespace
// where a socket receives them (no drop), and pktfate traces that
// namespace with -trace-args (e.g. "--source nf --filter-fate drop"): the
// cost of the netfilter hooks on delivered traffic.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/netns"
)

func main() {
	bin := flag.String("pktfate", "bin/pktfate", "pktfate binary")
	dur := flag.Duration("duration", 3*time.Second, "length of each flood")
	rounds := flag.Int("rounds", 3, "alternating rounds without/with the tracer")
	cpu := flag.Int("cpu", 0, "CPU the sender is pinned to")
	target := flag.String("target", "closed", "closed: UDP to a closed port (every packet dropped); veth: delivered across a veth pair")
	flag.BoolVar(&ruleset, "ruleset", false, "with -target veth: an nftables accept chain on prerouting and input of the receiving namespace in both arms, so netfilter runs with or without pktfate (a host with a firewall)")
	flag.BoolVar(&bpfStats, "bpf-stats", false, "also measure what pktfate's BPF programs cost per packet (kernel.bpf_stats_enabled during the traced floods; the statistics themselves add two clock reads per run)")
	flag.DurationVar(&settle, "settle", time.Second, "wait this long after pktfate is ready before its flood")
	flag.BoolVar(&perfShare, "perf", false, "also sample the sender's CPU with perf (linux-perf) and report the share of its time in netfilter hooks (nf_hook_slow) and in tracepoint BPF programs (bpf_trace_run*), with and without pktfate: a ratio within each flood, unmoved by the machine's speed swings")
	flag.IntVar(&tracerCPU, "tracer-cpu", -1, "pin pktfate to this CPU (taskset) to separate its user-space share from the kernel-side cost; -1 leaves it to the scheduler")
	flag.IntVar(&recvBatch, "recv-batch", 64, "with -target veth: datagrams the receiver reads a call (recvmmsg); how many it frees at once decides whether the kernel hands them back to the sender's CPU (skb_attempt_defer_free) or frees them where they were read")
	flag.StringVar(&keepOutput, "keep-output", "", "copy the last traced flood's NDJSON output (events and summary) to this file")
	flag.StringVar(&floorTPs, "floor", "", "also flood, in each round, with an empty BPF program (tp_btf, like pktfate's) on each of these tracepoints (comma-separated, e.g. kfree_skb,consume_skb,skb_copy_datagram_iovec): with -perf, the share any tracepoint program costs the sender before it does anything")
	traceArgs := flag.String("trace-args", "--filter-fate drop", "extra pktfate trace arguments")
	child := flag.Bool("send-child", false, "internal: be the pinned sender process (socket on fd 3)")
	sendTo := flag.String("send-to", "", "internal: the sender's destination")
	flag.Parse()
	if *child {
		if err := sendChild(*dur, *sendTo); err != nil {
			fmt.Fprintf(os.Stderr, "udpflood sender: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *target != "closed" && *target != "veth" {
		fmt.Fprintf(os.Stderr, "udpflood: -target %q: use closed or veth\n", *target)
		os.Exit(2)
	}
	if err := run(*bin, *dur, *rounds, *cpu, *target, strings.Fields(*traceArgs)); err != nil {
		fmt.Fprintf(os.Stderr, "udpflood: %v\n", err)
		os.Exit(1)
	}
}

type result struct {
	sent, noPorts, captured, lost uint64
	// rcvbuf counts datagrams the receiving socket had no room for
	// (Udp RcvbufErrors, -target veth): not delivered after all.
	rcvbuf uint64
	// What pktfate's summary counted in its namespace: a delivered flood
	// whose datagrams the kernel frees without a tracepoint shows none.
	events, drops, consumed uint64
	secs                    float64
	tracerUser, tracerSys   time.Duration               // pktfate's CPU time during the flood, traced floods only
	boxBusy                 float64                     // CPU-seconds busy on all CPUs during the flood
	bpfFrom, bpfTo          map[ebpf.ProgramID]progCost // with -bpf-stats
	shares                  shares                      // with -perf
}

func (r result) rate() float64 { return float64(r.sent) / r.secs }

// setup is where the flood goes: dst from src, traced in traceNS.
type setup struct {
	src, traceNS *netns.NS
	tracePath    string
	dst          *net.UDPAddr
}

func newSetup(target string, cpu int) (*setup, func(), error) {
	src, err := netns.New("")
	if err != nil {
		return nil, nil, err
	}
	if target == "closed" {
		return &setup{src: src, traceNS: src, dst: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}}, func() { src.Close() }, nil
	}
	name := fmt.Sprintf("udpflood-%d", os.Getpid())
	dstNS, err := netns.New(name)
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	cleanup := func() { src.Close(); dstNS.Close() }
	steps := []func() error{
		func() error { return netns.Veth(src, "fl0", dstNS, "fl1") },
		func() error { return src.AddAddr("fl0", "192.0.2.1/24") },
		func() error { return dstNS.AddAddr("fl1", "192.0.2.2/24") },
	}
	for _, f := range steps {
		if err := f(); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	var sink *net.UDPConn
	if err := dstNS.Do(func() error {
		var err error
		sink, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 5001})
		return err
	}); err != nil {
		cleanup()
		return nil, nil, err
	}
	sink.SetReadBuffer(8 << 20)
	if ruleset {
		// What a host with a firewall has: netfilter runs for every packet
		// whether pktfate is there or not.
		const accept = "table inet pktfate_bench {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n }\n chain in {\n  type filter hook input priority 0; policy accept;\n }\n}\n"
		if out, err := dstNS.Exec(context.Background(), accept, "nft", "-f", "-"); err != nil {
			sink.Close()
			cleanup()
			return nil, nil, fmt.Errorf("adding the accept chains: %v: %s", err, out)
		}
	}
	// The receiver polls without ever sleeping. A receiver that sleeps
	// when it has caught up must be woken by the sender's CPU (an IPI, a
	// VM exit here) for every few packets, and the slower the sender, the
	// more often it catches up: any slowdown would be amplified. It reads
	// up to 64 datagrams a call (recvmmsg): one recvfrom a datagram kept
	// up with 40% of the sender, the socket's buffer overflowed, and the
	// "delivered" flood was 60% SOCKET_RCVBUFF drops.
	raw, err := sink.SyscallConn()
	if err != nil {
		sink.Close()
		cleanup()
		return nil, nil, err
	}
	var stop atomic.Bool
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		runtime.LockOSThread() // a thread of its own for the whole run
		// On a CPU of its own, never the sender's: where the receiver
		// runs decides what the kernel does with each datagram after
		// the read (on the sender's CPU, freed there with no tracepoint;
		// on another, handed back to the sender's CPU, whose flush passes
		// consume_skb), and the scheduler chose differently from one
		// flood to the next.
		var set unix.CPUSet
		set.Set((cpu + 1) % runtime.NumCPU())
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			fmt.Fprintf(os.Stderr, "udpflood: pinning the receiver: %v\n", err)
		}
		batch := recvBatch
		bufs := make([]byte, batch*2048)
		iovs := make([]unix.Iovec, batch)
		msgs := make([]unix.Mmsghdr, batch)
		for i := range msgs {
			iovs[i].Base = &bufs[i*2048]
			iovs[i].SetLen(2048)
			msgs[i].Hdr.Iov = &iovs[i]
			msgs[i].Hdr.SetIovlen(1)
		}
		raw.Read(func(fd uintptr) bool {
			for !stop.Load() {
				unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(batch), unix.MSG_DONTWAIT, 0, 0)
			}
			return true
		})
	}()
	stopSink := func() { stop.Store(true); <-stopped; sink.Close() }
	return &setup{src: src, traceNS: dstNS, tracePath: "/run/netns/" + name, dst: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 5001}},
		func() { stopSink(); cleanup() }, nil
}

// tracerCPU is -tracer-cpu, bpfStats -bpf-stats, ruleset -ruleset,
// settle -settle.
var (
	recvBatch  int
	keepOutput string
	settle     time.Duration
	ruleset    bool
	tracerCPU  int
	bpfStats   bool
)

func run(bin string, dur time.Duration, rounds, cpu int, target string, traceArgs []string) error {
	st, cleanup, err := newSetup(target, cpu)
	if err != nil {
		return err
	}
	defer cleanup()
	var base, traced []result
	var paired, perfCost, floorCost []float64
	for i := 0; i < rounds; i++ {
		// Alternate which flood goes first (ABBA), so a drift of the
		// machine's speed does not side with one of them.
		var b, r result
		var err error
		if i%2 == 0 {
			if b, err = flood(st, dur, cpu); err == nil {
				r, err = floodTraced(st, bin, dur, cpu, traceArgs)
			}
		} else {
			if r, err = floodTraced(st, bin, dur, cpu, traceArgs); err == nil {
				b, err = flood(st, dur, cpu)
			}
		}
		if err != nil {
			return err
		}
		var f result
		if floorTPs != "" {
			f, err = floodFloor(st, dur, cpu)
		}
		if err != nil {
			return err
		}
		base, traced = append(base, b), append(traced, r)
		paired = append(paired, 1-r.rate()/b.rate())
		fmt.Printf("round %d: without %.0f pkt/s; with pktfate %.0f pkt/s, kernel drops %d, reported %d, lost %d\n",
			i+1, b.rate(), r.rate(), r.noPorts, r.captured, r.lost)
		if target == "veth" {
			fmt.Printf("  pktfate's events: %d (%d drops, %d consumed): %.2f a datagram sent\n",
				r.events, r.drops, r.consumed, float64(r.events)/float64(max(r.sent, 1)))
		}
		if b.rcvbuf+r.rcvbuf > 0 {
			fmt.Printf("  the receiver fell behind: %d datagrams without, %d with pktfate were dropped for its full buffer (SOCKET_RCVBUFF), not delivered\n",
				b.rcvbuf, r.rcvbuf)
		}
		box := fmt.Sprintf("whole box busy per packet: %.0f ns without, %.0f ns with",
			1e9*b.boxBusy/float64(max(b.sent, 1)), 1e9*r.boxBusy/float64(max(r.sent, 1)))
		if r.captured > 0 {
			fmt.Printf("  pktfate CPU per event during the flood: user %.0f ns, system %.0f ns; %s\n",
				perEvent(r.tracerUser, r.captured), perEvent(r.tracerSys, r.captured), box)
		} else {
			fmt.Printf("  pktfate CPU during the flood: user %v, system %v; %s\n",
				r.tracerUser.Round(time.Millisecond), r.tracerSys.Round(time.Millisecond), box)
		}
		if perfShare {
			cost := (r.shares.hooks + r.shares.tps) - (b.shares.hooks + b.shares.tps)
			perfCost = append(perfCost, cost)
			fmt.Printf("  perf, sender's CPU: in netfilter hooks %.1f%% without, %.1f%% with; in tracepoint programs %.1f%% without, %.1f%% with; pktfate's share %.1f%%\n",
				100*b.shares.hooks, 100*r.shares.hooks, 100*b.shares.tps, 100*r.shares.tps, 100*cost)
			if floorTPs != "" {
				fc := (f.shares.hooks + f.shares.tps) - (b.shares.hooks + b.shares.tps)
				floorCost = append(floorCost, fc)
				fmt.Printf("  empty programs on %s: %.0f pkt/s, in tracepoint programs %.1f%%: the floor's share %.1f%%, pktfate above it %.1f%%\n",
					floorTPs, f.rate(), 100*f.shares.tps, 100*fc, 100*(cost-fc))
			}
		}
		if bpfStats {
			rep, err := costReport(r.bpfFrom, r.bpfTo, r.sent, b.rate())
			if err != nil {
				return err
			}
			fmt.Printf("  %s\n", rep)
		}
	}
	slices.Sort(paired)
	b, t := median(base), median(traced)
	var sumNo, sumCap, sumLost, sumRcv, sumDrops, sumConsumed uint64
	for _, r := range traced {
		sumNo += r.noPorts
		sumCap += r.captured
		sumLost += r.lost
		sumRcv += r.rcvbuf
		sumDrops += r.drops
		sumConsumed += r.consumed
	}
	fmt.Printf("\nsender rate without tracer (median): %.0f pkt/s\n", b)
	fmt.Printf("sender rate with pktfate (median):   %.0f pkt/s\n", t)
	q := func(f float64) float64 { return 100 * paired[int(f*float64(len(paired)-1)+0.5)] }
	fmt.Printf("slowdown: %.1f%% (ratio of medians); paired rounds: median %.1f%%, quartiles %.1f%% .. %.1f%%, range %.1f%% .. %.1f%%\n",
		100*(1-t/b), q(0.5), q(0.25), q(0.75), q(0), q(1))
	if perfShare {
		slices.Sort(perfCost)
		fmt.Printf("perf: share of the sender's CPU time in pktfate's kernel programs and the netfilter hooks they switch on: median %.1f%%, range %.1f%% .. %.1f%%\n",
			100*perfCost[len(perfCost)/2], 100*perfCost[0], 100*perfCost[len(perfCost)-1])
		if len(floorCost) > 0 {
			slices.Sort(floorCost)
			fmt.Printf("perf: share of empty programs on the same tracepoints (the kernel's dispatch, the floor of any tracepoint program): median %.1f%%, range %.1f%% .. %.1f%%\n",
				100*floorCost[len(floorCost)/2], 100*floorCost[0], 100*floorCost[len(floorCost)-1])
		}
	}
	if target == "veth" {
		// The delivered flood's drops are the receiver's full buffer
		// (Udp RcvbufErrors), not NoPorts: pktfate's drops of any reason
		// against them (a drop of another kind shows as negative).
		fmt.Printf("drops: kernel RcvbufErrors %d, pktfate's drops %d (%.2f%%), lost and counted %d, unaccounted %d\n",
			sumRcv, sumDrops, 100*float64(sumDrops)/float64(max(sumRcv, 1)), sumLost, int64(sumRcv)-int64(sumDrops)-int64(sumLost))
		return nil
	}
	if sumConsumed > 0 && sumLost > 0 && sumNo >= sumCap && sumNo-sumCap <= sumLost {
		// pktfate's loss counters count events of any fate (a full ring
		// does not know what the record would have said): the drops not
		// reported are within them, and nothing more can be said.
		fmt.Printf("drops: kernel NoPorts %d, reported %d (%.2f%%), lost and counted %d events of any fate (drops and consumes), covering the %d drops not reported\n",
			sumNo, sumCap, 100*float64(sumCap)/float64(max(sumNo, 1)), sumLost, sumNo-sumCap)
		return nil
	}
	fmt.Printf("drops: kernel NoPorts %d, reported %d (%.2f%%), lost and counted %d, unaccounted %d\n",
		sumNo, sumCap, 100*float64(sumCap)/float64(max(sumNo, 1)), sumLost, int64(sumNo)-int64(sumCap)-int64(sumLost))
	return nil
}

// procCPU is the user and system time of process pid (/proc/PID/stat, in
// clock ticks of 10 ms: enough over a flood of seconds).
func procCPU(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces: fields count from its ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64) // utime, field 14
	s, err2 := strconv.ParseUint(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ
	return time.Duration(u) * tick, time.Duration(s) * tick, nil
}

func perEvent(d time.Duration, n uint64) float64 {
	return float64(d.Nanoseconds()) / float64(max(n, 1))
}

// busy is the CPU time all CPUs have spent not idle, from /proc/stat.
func busy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var total float64
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, err
		}
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		total += n
	}
	return total / 100, nil // USER_HZ
}

func median(rs []result) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.rate()
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func noPorts(ns *netns.NS) (uint64, error) { return udpCounter(ns, "NoPorts") }

// udpCounter reads one of the Udp counters of /proc/net/snmp in ns.
func udpCounter(ns *netns.NS, counter string) (uint64, error) {
	var n uint64
	err := ns.Do(func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		var header []string
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if header == nil {
				header = f
				continue
			}
			for i, name := range header {
				if name == counter && i < len(f) {
					n, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Udp %s in /proc/net/snmp", counter)
	})
	return n, err
}

// flood sends 64-byte UDP datagrams to st.dst in batches of 64 (sendmmsg)
// for dur, from a child process pinned to cpu (sendChild). A pinned thread
// of this process would pass its pinning to every thread it starts and to
// every process started from it (pktfate), which would then share the
// sender's CPU: the sender is a process of its own.
func flood(st *setup, dur time.Duration, cpu int) (result, error) {
	var conn *net.UDPConn
	if err := st.src.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		return result{}, err
	}
	defer conn.Close()
	sock, err := conn.File()
	if err != nil {
		return result{}, err
	}
	defer sock.Close()
	before, err := noPorts(st.traceNS)
	if err != nil {
		return result{}, err
	}
	rcvFrom, err := udpCounter(st.traceNS, "RcvbufErrors")
	if err != nil {
		return result{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command("taskset", "-c", strconv.Itoa(cpu), self,
		"-send-child", "-duration", dur.String(), "-send-to", st.dst.String())
	cmd.ExtraFiles = []*os.File{sock} // fd 3
	cmd.Stderr = os.Stderr
	var perfWait func() (shares, error)
	if perfShare {
		// Inside the flood: the sender takes a moment to start.
		if perfWait, err = startPerf(cpu, dur-300*time.Millisecond); err != nil {
			return result{}, err
		}
	}
	busyFrom, err := busy()
	if err != nil {
		return result{}, err
	}
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("sender: %w", err)
	}
	var sh shares
	if perfWait != nil {
		if sh, err = perfWait(); err != nil {
			return result{}, err
		}
	}
	busyTo, err := busy()
	if err != nil {
		return result{}, err
	}
	var sr sendReport
	if err := json.Unmarshal(out, &sr); err != nil {
		return result{}, fmt.Errorf("sender's report %q: %w", out, err)
	}
	time.Sleep(100 * time.Millisecond)
	after, err := noPorts(st.traceNS)
	if err != nil {
		return result{}, err
	}
	rcvTo, err := udpCounter(st.traceNS, "RcvbufErrors")
	if err != nil {
		return result{}, err
	}
	return result{sent: sr.Sent, noPorts: after - before, rcvbuf: rcvTo - rcvFrom, secs: sr.Secs, boxBusy: busyTo - busyFrom, shares: sh}, nil
}

// sendReport is what sendChild prints.
type sendReport struct {
	Sent uint64  `json:"sent"`
	Secs float64 `json:"secs"`
}

// sendChild is the sender process: it floods dst through the UDP socket
// inherited as fd 3 for dur and prints a sendReport. The busy time it
// spends is measured by the parent (whole-box /proc/stat), which includes
// the process start; the rate covers the send loop only.
func sendChild(dur time.Duration, dst string) error {
	addr, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		return err
	}
	f := os.NewFile(3, "sender socket")
	c, err := net.FilePacketConn(f)
	if err != nil {
		return fmt.Errorf("the inherited socket: %w", err)
	}
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, 64)
	payload := make([]byte, 64)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: addr}
	}
	var sent uint64
	start := time.Now()
	deadline := start.Add(dur)
	for time.Now().Before(deadline) {
		for range 16 {
			n, err := pc.WriteBatch(msgs, 0)
			if err != nil {
				continue // ECONNREFUSED from earlier ICMP errors: not a send failure
			}
			sent += uint64(n)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(sendReport{Sent: sent, Secs: time.Since(start).Seconds()})
}

func floodTraced(st *setup, bin string, dur time.Duration, cpu int, traceArgs []string) (result, error) {
	dir, err := os.MkdirTemp("", "udpflood-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	ready, out := filepath.Join(dir, "ready"), filepath.Join(dir, "out.ndjson")
	netnsArg := strconv.FormatUint(uint64(st.traceNS.Inode), 10)
	if st.tracePath != "" {
		netnsArg = st.tracePath
	}
	args := append([]string{"trace", "--output-json", "--output-file", out, "--ready-file", ready, "--filter-netns", netnsArg}, traceArgs...)
	cmd := exec.Command(bin, args...)
	if tracerCPU >= 0 {
		cmd = exec.Command("taskset", append([]string{"-c", strconv.Itoa(tracerCPU), bin}, args...)...)
	}
	cmd.Stderr = os.Stderr
	idsBefore := progIDs()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("pktfate never became ready")
		}
	}
	// What start-up leaves behind (the Go runtime collecting the parsed
	// BTF, the kernel freeing what loading used) is not the cost of
	// tracing: let it pass.
	time.Sleep(settle)
	var statsBefore map[ebpf.ProgramID]progCost
	if bpfStats {
		restore, err := enableBPFStats()
		if err != nil {
			return result{}, fmt.Errorf("enabling BPF statistics: %w", err)
		}
		defer restore()
		statsBefore = progStats(idsBefore)
	}
	userFrom, sysFrom, err := procCPU(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	r, err := flood(st, dur, cpu)
	if err != nil {
		return r, err
	}
	userTo, sysTo, err := procCPU(cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	if bpfStats {
		r.bpfFrom, r.bpfTo = statsBefore, progStats(idsBefore)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		return r, err
	}
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("pktfate trace: %w", err)
	}
	r.tracerUser, r.tracerSys = userTo-userFrom, sysTo-sysFrom
	if keepOutput != "" {
		if err := copyFile(keepOutput, out); err != nil {
			return r, err
		}
	}
	sum, err := lastLine(out)
	if err != nil {
		return r, err
	}
	var s fate.SummaryLine
	if err := json.Unmarshal(sum, &s); err != nil {
		return r, fmt.Errorf("parsing summary: %w", err)
	}
	r.captured = s.ByReason.Map()["NO_SOCKET"]
	r.events, r.drops, r.consumed = s.Events, s.Drops, s.Consumed
	for _, l := range s.Lost {
		if l.Unknown != "" {
			return r, fmt.Errorf("pktfate could not read its loss counter %s: %s", l.Key(), l.Unknown)
		}
		r.lost += l.Value
		if l.Value > 0 {
			fmt.Printf("  pktfate lost %s=%d\n", l.Key(), l.Value)
		}
	}
	return r, nil
}

func lastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-64<<10, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	return []byte(lines[len(lines)-1]), nil
}

// copyFile copies src to dst (-keep-output).
func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
