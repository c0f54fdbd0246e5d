// Command soak runs `pktfate serve` for a long time at a steady drop rate
// and prints what it holds as it goes: resident memory, CPU, goroutines,
// open descriptors, series, and the drops it counted against those sent.
// A long-running agent must stay flat once warm.
//
// Traffic: UDP to a closed port (NO_SOCKET) and to a port an nftables rule
// drops (NETFILTER_DROP) in a namespace of its own, paced to -rate packets
// a second; every -churn a new namespace comes (a few drops in it) and the
// previous one goes, as containers do, so namespace naming, the netfilter
// links of every namespace and the series of namespaces that went away are
// exercised too. pktfate serve runs without a namespace filter, with a
// pcap filter on the soak's ports; /metrics is scraped every -scrape, as
// Prometheus would. Run as root from the repository (bench/soak.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

const closedPort, nftPort = 47930, 47931

func main() {
	bin := flag.String("pktfate", "bin/pktfate", "pktfate binary")
	dur := flag.Duration("duration", 10*time.Minute, "how long to run")
	rate := flag.Int("rate", 2000, "drops per second (3/4 NO_SOCKET, 1/4 NETFILTER_DROP)")
	churn := flag.Duration("churn", 15*time.Second, "a namespace comes and the last one goes this often (0: none)")
	scrape := flag.Duration("scrape", 10*time.Second, "scrape /metrics this often")
	every := flag.Duration("every", time.Minute, "print a line this often")
	warm := flag.Duration("warmup", 30*time.Second, "the start figures are taken after this long")
	flag.Parse()
	if err := run(*bin, *dur, *rate, *churn, *scrape, *every, *warm); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
}

type sample struct {
	at                        time.Duration
	rssKiB, anonKiB           uint64
	heapMiB                   float64
	cpu                       time.Duration // utime+stime so far
	goroutines, fds           int
	series, namespaces        float64
	dropsCounted, lost, folds float64
	sent                      uint64
}

func run(bin string, dur time.Duration, rate int, churn, scrapeEvery, every, warm time.Duration) error {
	pid := os.Getpid()
	name := fmt.Sprintf("pktfate-soak-%d", pid)
	ns, err := netns.New(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := testutil.AddRule(ctx, ns, "nftables", "udp4", "LOCAL_IN", "DROP", nftPort); err != nil {
		return err
	}
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()

	var stderr strings.Builder
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--metrics-netns-linger", "30s",
		fmt.Sprintf("udp and (dst port %d or dst port %d)", closedPort, nftPort))
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addrc := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		re := regexp.MustCompile(`serving http://([^/]+)/metrics`)
		sent := false
		for {
			n, err := pr.Read(buf)
			stderr.Write(buf[:n])
			if m := re.FindStringSubmatch(stderr.String()); m != nil && !sent {
				addrc <- m[1]
				sent = true
			}
			if err != nil {
				return
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(60 * time.Second):
		return fmt.Errorf("pktfate serve did not start: %s", stderr.String())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pktfate serve never healthy: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("soak: pktfate serve pid %d on %s, %d drops/s, a namespace every %s, %s\n", cmd.Process.Pid, addr, rate, churn, dur)

	start := time.Now()
	var sent uint64
	loop := netip.MustParseAddr("127.0.0.1")
	payload := []byte("pktfate soak")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	scrapeT := time.NewTicker(scrapeEvery)
	defer scrapeT.Stop()
	churnC := make(<-chan time.Time)
	if churn > 0 {
		ct := time.NewTicker(churn)
		defer ct.Stop()
		churnC = ct.C
	}
	var churned *netns.NS
	defer func() {
		if churned != nil {
			churned.Close()
		}
	}()
	nchurn := 0
	var samples []sample
	nextPrint := warm
	take := func(label string) error {
		s, err := measure(client, addr, cmd.Process.Pid)
		if err != nil {
			return err
		}
		s.at, s.sent = time.Since(start), sent
		samples = append(samples, s)
		fmt.Printf("%-6s %7s  rss %6.1f MiB (anon %5.1f, heap %5.1f)  cpu %5.1f%% (since last)  goroutines %3d  fds %4d  series %4.0f  netns scans %4.0f  drops counted %9.0f of %9d sent  lost %0.f  folded %0.f\n",
			label, s.at.Round(time.Second), float64(s.rssKiB)/1024, float64(s.anonKiB)/1024, s.heapMiB, cpuShare(samples), s.goroutines, s.fds, s.series, s.namespaces,
			s.dropsCounted, s.sent, s.lost, s.folds)
		return nil
	}
	due := 0.0
	last := time.Now()
	for time.Since(start) < dur {
		select {
		case now := <-tick.C:
			due += float64(rate) * now.Sub(last).Seconds()
			last = now
			for ; due >= 1; due-- {
				port := uint16(closedPort)
				if sent%4 == 3 {
					port = nftPort
				}
				if _, err := conn.WriteToUDPAddrPort(payload, netip.AddrPortFrom(loop, port)); err != nil && !errors.Is(err, syscall.EPERM) {
					return err
				}
				sent++
			}
		case <-scrapeT.C:
			if _, err := measure(client, addr, cmd.Process.Pid); err != nil {
				return err
			}
			if time.Since(start) >= nextPrint {
				label := "start"
				if len(samples) > 0 {
					label = "."
				}
				if err := take(label); err != nil {
					return err
				}
				nextPrint += every
			}
		case <-churnC:
			nchurn++
			next, err := netns.New(fmt.Sprintf("%s-c%d", name, nchurn))
			if err != nil {
				return err
			}
			if churned != nil {
				churned.Close()
			}
			churned = next
			// nf attaches in a new namespace within a second; the drops
			// are NO_SOCKET whether it did or not.
			if err := churned.SendUDP("udp4", netip.AddrPortFrom(loop, closedPort), 10, payload); err != nil {
				return err
			}
			sent += 10
		}
	}
	time.Sleep(2 * time.Second) // the last correlation windows close
	if err := take("end"); err != nil {
		return err
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("pktfate serve exited with %v: %s", err, stderr.String())
	}
	pw.Close()
	fmt.Printf("soak: %s", lastLines(stderr.String(), 1))
	report(samples)
	return nil
}

// measure scrapes /metrics and reads /proc for the process.
func measure(client *http.Client, addr string, pid int) (sample, error) {
	var s sample
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return s, fmt.Errorf("scraping: %w", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return s, fmt.Errorf("parsing /metrics: %w", err)
	}
	sum := func(name string) float64 {
		v := 0.0
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		return v
	}
	s.goroutines = int(sum("go_goroutines"))
	s.heapMiB = sum("go_memstats_heap_inuse_bytes") / (1 << 20)
	s.series = sum("pktfate_metric_series")
	s.namespaces = sum("pktfate_netns_scans_total")
	s.dropsCounted = sum("pktfate_packets_dropped_total")
	s.lost = sum("pktfate_lost_events_total")
	s.folds = sum("pktfate_metric_folded_total")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.ParseUint(strings.Fields(v)[0], 10, 64)
		}
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			s.anonKiB, _ = strconv.ParseUint(strings.Fields(v)[0], 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64) // utime, field 14
	st2, _ := strconv.ParseUint(f[12], 10, 64)
	s.cpu = time.Duration(ut+st2) * time.Second / 100 // USER_HZ
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	return s, nil
}

// cpuShare is the process's CPU use between the last two samples, in
// percent of one CPU.
func cpuShare(ss []sample) float64 {
	if len(ss) < 2 {
		return 100 * ss[0].cpu.Seconds() / ss[0].at.Seconds()
	}
	a, b := ss[len(ss)-2], ss[len(ss)-1]
	return 100 * (b.cpu - a.cpu).Seconds() / (b.at - a.at).Seconds()
}

// report prints start, middle and end.
func report(ss []sample) {
	if len(ss) < 3 {
		return
	}
	mid := ss[len(ss)/2]
	fmt.Println("\nsoak summary (start = after the warm-up):")
	fmt.Println("point   time     RSS MiB  anon MiB  heap MiB  CPU % (avg since previous point)  goroutines  fds  series")
	prev := sample{}
	for i, p := range []sample{ss[0], mid, ss[len(ss)-1]} {
		share := 0.0
		if i == 0 {
			share = 100 * p.cpu.Seconds() / p.at.Seconds()
		} else {
			share = 100 * (p.cpu - prev.cpu).Seconds() / (p.at - prev.at).Seconds()
		}
		fmt.Printf("%-6s  %7s  %7.1f  %8.1f  %8.1f  %5.1f                             %10d  %3d  %6.0f\n",
			[]string{"start", "middle", "end"}[i], p.at.Round(time.Second), float64(p.rssKiB)/1024, float64(p.anonKiB)/1024, p.heapMiB, share, p.goroutines, p.fds, p.series)
		prev = p
	}
	end := ss[len(ss)-1]
	fmt.Printf("drops sent %d, counted %.0f (the host's own drops to these ports count too), lost events %.0f\n", end.sent, end.dropsCounted, end.lost)
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n") + "\n"
}
