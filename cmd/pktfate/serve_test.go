package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pktfate/pktfate/internal/metrics"
	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// syncBuffer is a bytes.Buffer the test reads while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveProc is a running `pktfate serve`.
type serveProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	addr   string
	done   chan error
}

var servingRE = regexp.MustCompile(`serving http://([^/]+)/metrics`)

// startServe starts pktfate serve on a free loopback port and waits until
// /healthz says every source is attached.
func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(pktfateBinary(t), append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(60 * time.Second) // TCG VMs are slow
	for p.addr == "" {
		if m := servingRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
			break
		}
		p.checkRunning(t, deadline, "print its address")
	}
	for {
		if code, _, _ := p.get(t, "/healthz", ""); code == http.StatusOK {
			return p
		}
		p.checkRunning(t, deadline, "become healthy")
	}
}

func (p *serveProc) checkRunning(t *testing.T, deadline time.Time, what string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("pktfate serve exited (%v) before it could %s: %s", err, what, p.stderr.String())
	default:
	}
	if time.Now().After(deadline) {
		t.Fatalf("pktfate serve did not %s: %s", what, p.stderr.String())
	}
	time.Sleep(20 * time.Millisecond)
}

// client makes a new connection for every request: what many scrapers
// do, and what would leak descriptors if the server kept them.
var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches path with an Accept header ("" for none).
func (p *serveProc) get(t *testing.T, path, accept string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+p.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// scrape returns /metrics in the text format, parsed, and the text.
func (p *serveProc) scrape(t *testing.T) (families, string) {
	t.Helper()
	code, _, body := p.get(t, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams, body
}

// stop sends SIGTERM and waits for a clean exit; it returns stderr.
func (p *serveProc) stop(t *testing.T) string {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("pktfate serve exited with %v on SIGTERM: %s", err, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("pktfate serve did not stop on SIGTERM: %s", p.stderr.String())
	}
	return p.stderr.String()
}

type families map[string]*dto.MetricFamily

// sum adds the samples of name whose labels include match, and counts
// them.
func (f families) sum(name string, match map[string]string) (float64, int) {
	mf := f[name]
	if mf == nil {
		return 0, 0
	}
	var v float64
	n := 0
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, want := range match {
			if labels[k] != want {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
		n++
	}
	return v, n
}

// by sums the samples of name by the value of one label.
func (f families) by(name, label string) map[string]float64 {
	out := map[string]float64{}
	mf := f[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out[lp.GetValue()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// waitMetrics scrapes until cond holds (the correlator holds a record for
// its window before it counts) and returns that scrape.
func (p *serveProc) waitMetrics(t *testing.T, what string, cond func(families) bool) families {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		fams, text := p.scrape(t)
		if cond(fams) {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60 s; last scrape:\n%s", what, grepLines(text, "pktfate_"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// dropTraffic is a namespace where UDP to port 9 finds no socket
// (NO_SOCKET) and UDP to port 7777 meets an nftables DROP
// (NETFILTER_DROP).
type dropTraffic struct {
	ns   *netns.NS
	name string
}

const nftDropPort = 7777

func newDropTraffic(t *testing.T, tag string) *dropTraffic {
	t.Helper()
	name := fmt.Sprintf("pktfate-%s-%d", tag, os.Getpid())
	ns, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testutil.AddRule(ctx, ns, "nftables", "udp4", "LOCAL_IN", "DROP", nftDropPort); err != nil {
		t.Fatal(err)
	}
	return &dropTraffic{ns: ns, name: name}
}

func (d *dropTraffic) send(t *testing.T, noSocket, nfDrop int) {
	t.Helper()
	sendUDP(t, d.ns, "udp4", netip.MustParseAddrPort("127.0.0.1:9"), noSocket)
	sendUDP(t, d.ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), nftDropPort), nfDrop)
}

// serveArgs traces the namespace of d. Inside the VM matrix, nothing else
// runs: the namespace filter is left out so that drop_monitor (which
// cannot filter by namespace) joins, and every packet it also saw must
// still count once.
func (d *dropTraffic) serveArgs() []string {
	if testutil.InVM() != "" {
		return []string{fmt.Sprintf("udp and (dst port 9 or dst port %d)", nftDropPort)}
	}
	return []string{"--filter-netns", d.name, "udp"}
}

const sentNoSocket, sentNFDrop = 7, 5

// TestServeMetrics: pktfate serve counts each dropped packet once by
// reason, function, hook, namespace (by its name) and interface, however
// many observers saw it; the ledger and the sources are there; /metrics
// speaks the text format and OpenMetrics; scrapes leave no descriptor or
// goroutine behind; SIGTERM ends it cleanly.
func TestServeMetrics(t *testing.T) {
	testutil.RequireRoot(t)
	d := newDropTraffic(t, "serve")
	p := startServe(t, d.serveArgs()...)
	d.send(t, sentNoSocket, sentNFDrop)
	ours := map[string]string{"netns": d.name}
	fams := p.waitMetrics(t, "drops counted", func(f families) bool {
		n, _ := f.sum(metrics.NameDropped, ours)
		return n >= sentNoSocket+sentNFDrop
	})
	time.Sleep(time.Second) // a second look: nothing counted twice, later
	fams, text := p.scrape(t)
	byReason := map[string]float64{}
	for _, m := range fams[metrics.NameDropped].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if labels["netns"] != d.name {
			if testutil.InVM() == "" {
				t.Errorf("a drop outside the filtered namespace: %v", labels)
			}
			continue
		}
		byReason[labels["reason"]] += m.GetCounter().GetValue()
		if labels["interface"] != "lo" {
			t.Errorf("interface %q, want lo: %v", labels["interface"], labels)
		}
		switch labels["reason"] {
		case "NO_SOCKET":
			if !slices.Contains([]string{"__udp4_lib_rcv", "udp_rcv"}, labels["location"]) {
				t.Errorf("NO_SOCKET location %q, want the UDP receive function without offset", labels["location"])
			}
		case "NETFILTER_DROP":
			// 6.1 frees the packet in nf_hook_slow, on the verdict
			// nft_do_chain returned; later kernels in nft_do_chain.
			if !slices.Contains([]string{"nft_do_chain", "nf_hook_slow"}, labels["location"]) {
				t.Errorf("NETFILTER_DROP location %q, want nft_do_chain or nf_hook_slow", labels["location"])
			}
			if nf, _ := fams.sum(metrics.NameUp, map[string]string{"observer": "nf"}); nf == 1 && (labels["hook"] != "LOCAL_IN" || labels["family"] != "ipv4") {
				t.Errorf("NETFILTER_DROP with nf running: hook %q family %q, want LOCAL_IN ipv4", labels["hook"], labels["family"])
			}
		}
	}
	if want := map[string]float64{"NO_SOCKET": sentNoSocket, "NETFILTER_DROP": sentNFDrop}; !mapsEqual(byReason, want) {
		t.Errorf("drops by reason %v, want %v (each packet once, however many observers saw it)\n%s", byReason, want, grepLines(text, "pktfate_"))
	}
	up := fams.by(metrics.NameUp, "observer")
	if up["ebpf"] != 1 {
		t.Errorf("ebpf not up: %v", up)
	}
	running := 0
	for o, v := range up {
		if v == 1 {
			running++
			if saw, _ := fams.sum(metrics.NameObserver, map[string]string{"observer": o, "status": "saw"}); saw == 0 && o != "kmod" {
				t.Errorf("observer %s up but saw nothing", o)
			}
		}
	}
	if saw, _ := fams.sum(metrics.NameObserver, map[string]string{"observer": "ebpf", "status": "saw"}); saw < sentNoSocket+sentNFDrop {
		t.Errorf("ebpf saw %v packets, want at least %d", saw, sentNoSocket+sentNFDrop)
	}
	if running >= 2 {
		if v, n := fams.sum(metrics.NameVerdicts, nil); n != 4 || v < sentNoSocket+sentNFDrop {
			t.Errorf("verdicts: %v over %d series, want all four verdicts and at least %d packets", v, n, sentNoSocket+sentNFDrop)
		}
	}
	if c, n := fams.sum(metrics.NameComplete, map[string]string{"observer": "ebpf"}); n != 1 || c != 1 {
		t.Errorf("ebpf complete = %v (%d samples), want 1: nothing was lost", c, n)
	}
	if _, n := fams.sum(metrics.NameLost, map[string]string{"observer": "ebpf", "name": "ringbuf_full"}); n != 1 {
		t.Errorf("the ebpf ring buffer's loss counter is not exported")
	}
	if v, n := fams.sum(metrics.NameBuildInfo, map[string]string{"version": version}); n != 1 || v != 1 {
		t.Errorf("build info: %v", fams[metrics.NameBuildInfo])
	}

	// Every metric of pktfate's own is documented (on the host: the
	// guests carry only the testdata/ folders).
	if doc, err := os.ReadFile("../../docs/metrics.md"); err == nil {
		for name := range fams {
			if strings.HasPrefix(name, "pktfate_") && !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("%s is exported but docs/metrics.md does not document it", name)
			}
		}
	} else if testutil.InVM() == "" {
		t.Fatal(err)
	}

	// Content negotiation: OpenMetrics when asked for, else the text format.
	code, ctype, body := p.get(t, "/metrics", "application/openmetrics-text; version=1.0.0")
	if code != 200 || !strings.HasPrefix(ctype, "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") ||
		!strings.Contains(body, "# TYPE pktfate_packets_dropped counter\n") {
		t.Errorf("OpenMetrics: %d %q, body ends %q", code, ctype, body[max(0, len(body)-40):])
	}
	if _, ctype, _ := p.get(t, "/metrics", ""); !strings.HasPrefix(ctype, "text/plain; version=0.0.4") {
		t.Errorf("text format content type %q", ctype)
	}
	if code, _, body := p.get(t, "/healthz", ""); code != 200 || !strings.HasPrefix(body, "ok: attached ebpf") {
		t.Errorf("/healthz: %d %q", code, body)
	}

	// Scrapes on new connections leave no descriptor or goroutine behind.
	fds0, _ := fams.sum("process_open_fds", nil)
	gor0, _ := fams.sum("go_goroutines", nil)
	for range 100 {
		p.get(t, "/metrics", "")
		p.get(t, "/healthz", "")
	}
	p.waitMetrics(t, "descriptors and goroutines back to where they were", func(f families) bool {
		fds, _ := f.sum("process_open_fds", nil)
		gor, _ := f.sum("go_goroutines", nil)
		return fds <= fds0+2 && gor <= gor0+2
	})

	stderr := p.stop(t)
	if !strings.Contains(stderr, "stopped after") {
		t.Errorf("no closing line on SIGTERM:\n%s", stderr)
	} else if want := fmt.Sprintf("(%d drops", sentNoSocket+sentNFDrop); testutil.InVM() == "" && !strings.Contains(stderr, want) {
		t.Errorf("the closing line does not count %d drops:\n%s", sentNoSocket+sentNFDrop, stderr)
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestServeCardinality: drops over more namespaces than the limit of label
// sets keep the limit's worth of series named after their namespaces, the
// rest fold into one _overflow series per reason, the fold counter adds
// up, and no packet is lost from the totals.
func TestServeCardinality(t *testing.T) {
	testutil.RequireRoot(t)
	const spaces, perNS, limit, port = 12, 3, 5, 47913
	var names []string
	var nss []*netns.NS
	for i := range spaces {
		name := fmt.Sprintf("pktfate-card-%d-%02d", os.Getpid(), i)
		ns, err := netns.New(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		names = append(names, name)
		nss = append(nss, ns)
	}
	p := startServe(t, "--metrics-max-series", fmt.Sprint(limit), fmt.Sprintf("udp dst port %d", port))
	for _, ns := range nss {
		sendUDP(t, ns, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), perNS)
	}
	fams := p.waitMetrics(t, "every drop counted", func(f families) bool {
		n, _ := f.sum(metrics.NameDropped, nil)
		return n >= spaces*perNS
	})
	total, series := fams.sum(metrics.NameDropped, nil)
	over, folded := fams.sum(metrics.NameDropped, map[string]string{"netns": metrics.Overflow, "location": metrics.Overflow, "interface": metrics.Overflow})
	counted, _ := fams.sum(metrics.NameFolded, map[string]string{"metric": metrics.NameDropped})
	if total != spaces*perNS {
		t.Errorf("%v drops, want %d", total, spaces*perNS)
	}
	if series-folded != limit || folded != 1 {
		t.Errorf("%d series with their own labels and %d folded, want %d and 1 (NO_SOCKET)", series-folded, folded, limit)
	}
	if counted != over || over != total-limit*perNS {
		t.Errorf("fold counter %v, _overflow series %v, want both %d", counted, over, int(total)-limit*perNS)
	}
	for ns, v := range fams.by(metrics.NameDropped, "netns") {
		if ns != metrics.Overflow && (!slices.Contains(names, ns) || v != perNS) {
			t.Errorf("series of netns %q with %v drops, want one of the test's namespaces by name with %d", ns, v, perNS)
		}
	}
	if s, _ := fams.sum(metrics.NameSeries, map[string]string{"metric": metrics.NameDropped}); int(s) != series {
		t.Errorf("%s = %v, %d series exported", metrics.NameSeries, s, series)
	}
	p.stop(t)
}

// TestServeBadInput: a busy port, a bad or non-loopback --listen, and a
// kernel feature that is not there are each one line naming the problem,
// before anything is attached.
func TestServeBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		args []string
		code int
		want string
		root bool
	}{
		{[]string{"--listen", "nonsense"}, 2, "--listen \"nonsense\": want HOST:PORT", false},
		{[]string{"--listen", "127.0.0.1:99999"}, 2, "the port must be a number", false},
		{[]string{"--listen", "metrics.example:9816"}, 2, "not a host name", false},
		{[]string{"--listen", "0.0.0.0:9816"}, 2, "not a loopback address", false},
		{[]string{"--listen", ":9816"}, 2, "add --listen-remote", false},
		{[]string{"--output-file-max-size", "lots"}, 2, "is not a size", false},
		{[]string{"--listen", busy.Addr().String()}, 1, "the port is already in use", true},
		{[]string{"--source", "kmod"}, 1, "source kmod cannot run", true},
		{[]string{"--filter-reason", "NO_SUCH_REASON"}, 2, "no such drop reason", true},
	} {
		if c.root && os.Geteuid() != 0 {
			continue
		}
		if slices.Contains(c.args, "kmod") {
			if _, err := os.Stat("/sys/module/pktfate"); err == nil {
				continue // the module is loaded here: kmod can run
			}
		}
		args := c.args
		if !slices.Contains(args, "--listen") {
			args = append([]string{"--listen", "127.0.0.1:0"}, args...)
		}
		cmd := exec.Command(pktfateBinary(t), append([]string{"serve"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		out := stderr.String()
		if code != c.code || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "pktfate: ") || !strings.Contains(out, c.want) {
			t.Errorf("serve %q: exit %d and %q, want exit %d and one line with %q", c.args, code, out, c.code, c.want)
		}
		if strings.Contains(out, "serving") {
			t.Errorf("serve %q: started serving before refusing: %q", c.args, out)
		}
	}
}

// TestServeOutputFile: --output-file gets every event and fate as NDJSON,
// rotated by size into whole-line files; SIGHUP does not stop serve but
// reopens the file (moved away by logrotate: a new one is begun); SIGTERM
// ends the last file with the summary.
func TestServeOutputFile(t *testing.T) {
	testutil.RequireRoot(t)
	d := newDropTraffic(t, "serveout")
	dir := t.TempDir()
	out := filepath.Join(dir, "events.ndjson")
	p := startServe(t, append([]string{"--output-file", out, "--output-file-max-size", "4K", "--output-file-keep", "20"}, d.serveArgs()...)...)
	d.send(t, 10, 0)
	p.waitMetrics(t, "the first drops", func(f families) bool {
		n, _ := f.sum(metrics.NameDropped, map[string]string{"netns": d.name})
		return n >= 10
	})
	time.Sleep(300 * time.Millisecond) // the renderer flushes every 100 ms
	if err := os.Rename(out, out+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stderr.String(), "SIGHUP: reopened") {
		p.checkRunning(t, deadline, "reopen its output file on SIGHUP")
	}
	if code, _, _ := p.get(t, "/healthz", ""); code != 200 {
		t.Fatalf("not healthy after SIGHUP: %d", code)
	}
	d.send(t, 5, 0)
	p.waitMetrics(t, "the later drops", func(f families) bool {
		n, _ := f.sum(metrics.NameDropped, map[string]string{"netns": d.name})
		return n >= 15
	})
	p.stop(t)

	files, _ := filepath.Glob(out + "*")
	var drops int
	var last map[string]any
	correlated := false // with several observers a packet is its fate line
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		correlated = correlated || bytes.Contains(b, []byte(`"type":"fate"`))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 4096 {
			t.Errorf("%s has %d bytes, more than --output-file-max-size", f, len(b))
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: a line that is not JSON (cut at a rotation?): %q", f, sc.Text())
			}
			if l["fate"] == "drop" && (l["type"] == "fate" && correlated || l["type"] == "event" && !correlated) {
				drops++
			}
			if f == out {
				last = l
			}
		}
	}
	if len(files) < 3 {
		t.Errorf("files %v: want the moved one, the reopened one and rotated ones", files)
	}
	if drops != 15 {
		t.Errorf("%d drops in the files, want 15", drops)
	}
	if last == nil || last["type"] != "summary" {
		t.Errorf("the output file does not end with the summary: %v", last)
	}
}

// TestServePrometheus: a real Prometheus scrapes pktfate serve every
// second; once two scrapes came after the drops, PromQL's sum by reason
// equals what was sent; promtool finds nothing wrong with the exposition.
func TestServePrometheus(t *testing.T) {
	testutil.RequireRoot(t)
	prom, promtool := promBinaries(t)
	d := newDropTraffic(t, "serveprom")
	p := startServe(t, d.serveArgs()...)
	promAddr := freeLoopback(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pktfate
    static_configs:
      - targets: ['%s']
        labels:
          host: test
`, p.addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var promLog syncBuffer
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	api := "http://" + promAddr
	waitFor(t, "Prometheus ready", 60*time.Second, func() bool {
		resp, err := client.Get(api + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, &promLog)

	d.send(t, sentNoSocket, sentNFDrop)
	p.waitMetrics(t, "pktfate counted the drops", func(f families) bool {
		n, _ := f.sum(metrics.NameDropped, map[string]string{"netns": d.name})
		return n >= sentNoSocket+sentNFDrop
	})
	counted := time.Now()
	scrapes := map[string]bool{}
	waitFor(t, "two scrapes after the drops were counted", 60*time.Second, func() bool {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					LastScrape time.Time `json:"lastScrape"`
					Health     string    `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := getJSON(api+"/api/v1/targets", &r); err != nil || len(r.Data.ActiveTargets) != 1 {
			return false
		}
		tg := r.Data.ActiveTargets[0]
		if tg.Health == "up" && tg.LastScrape.After(counted) {
			scrapes[tg.LastScrape.String()] = true
		}
		return len(scrapes) >= 2
	}, &promLog)

	query := func(q string) map[string]float64 {
		t.Helper()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := getJSON(api+"/api/v1/query?query="+url.QueryEscape(q), &r); err != nil || r.Status != "success" {
			t.Fatalf("query %s: %v %s", q, err, r.Status)
		}
		out := map[string]float64{}
		for _, res := range r.Data.Result {
			v, err := strconv.ParseFloat(fmt.Sprint(res.Value[1]), 64)
			if err != nil {
				t.Fatalf("query %s: value %v", q, res.Value)
			}
			var key []string
			for k, lv := range res.Metric {
				key = append(key, k+"="+lv)
			}
			slices.Sort(key)
			out[strings.Join(key, ",")] = v
		}
		return out
	}
	sel := fmt.Sprintf(`{netns=%q}`, d.name)
	if testutil.InVM() == "" {
		sel = "" // the namespace filter keeps every other drop out
	}
	got := query("sum by (reason) (pktfate_packets_dropped_total" + sel + ")")
	want := map[string]float64{"reason=NO_SOCKET": sentNoSocket, "reason=NETFILTER_DROP": sentNFDrop}
	if !mapsEqual(got, want) {
		t.Errorf("PromQL sum by (reason): %v, want %v", got, want)
	}
	if got := query(`pktfate_source_up{observer="ebpf", host="test"}`); len(got) != 1 {
		t.Errorf("ebpf up with the host label: %v", got)
	}
	if got := query(`min(pktfate_source_complete)`); got[""] != 1 {
		t.Errorf("min(pktfate_source_complete) = %v, want 1; incomplete: %v, lost: %v, unreadable: %v", got,
			query(`pktfate_source_complete == 0`), query(`pktfate_lost_events_total > 0`), query(`pktfate_loss_unreadable == 1`))
	}

	if testutil.InVM() != "" {
		// What the rest checks does not depend on the kernel; the guests
		// carry neither contrib/ nor promtool (Prometheus is 50 MB of a
		// guest's RAM disk already): the host checks them.
		if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
			t.Logf("guest memory with Prometheus running: %s", grepLines(string(mi), "MemAvailable"))
		}
		p.stop(t)
		return
	}
	// Every query of the Grafana dashboard runs, and the drop panels
	// show the drops.
	for _, q := range dashboardQueries(t) {
		got := query(strings.NewReplacer("$host", ".*", "$reason", ".*", "$__rate_interval", "1m").Replace(q))
		if strings.Contains(q, "pktfate_packets_dropped_total") && len(got) == 0 {
			t.Errorf("dashboard query %s: no result", q)
		}
	}

	_, text := p.scrape(t)
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	p.stop(t)
}

// promBinaries finds prometheus and promtool: on the host `make deps`
// installs them (Debian's prometheus); the VM matrix's guests do not carry
// them.
func promBinaries(t *testing.T) (string, string) {
	t.Helper()
	prom, err1 := exec.LookPath("prometheus")
	promtool, err2 := exec.LookPath("promtool")
	if testutil.InVM() != "" {
		// internal/vm ships the host's prometheus (vm.HostTools), not
		// promtool: the host runs what needs it.
		if err1 != nil {
			t.Skipf("the guest carries no prometheus (the host has none to ship: %v): the host runs this test", err1)
		}
		return prom, ""
	}
	if err1 != nil || err2 != nil {
		t.Fatalf("prometheus and promtool not found (%v; %v): `make deps` installs Debian's prometheus", err1, err2)
	}
	return prom, promtool
}

// TestPrometheusRules: the example scrape configuration and alert rules
// in contrib/prometheus are what docs/fleet.md shows, promtool accepts
// them, and the rules' own unit tests pass (promtool test rules).
func TestPrometheusRules(t *testing.T) {
	skipOutsideTestdata(t)
	_, promtool := promBinaries(t)
	doc, err := os.ReadFile("../../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"prometheus.yml", "pktfate-rules.yml"} {
		b, err := os.ReadFile(filepath.Join("../../contrib/prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, b) {
			t.Errorf("docs/fleet.md does not show contrib/prometheus/%s as it is", f)
		}
	}
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "pktfate-rules.yml"},
		{"test", "rules", "pktfate-rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../../contrib/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func getJSON(u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool, log *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s\n%s", what, d, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeUnitCapabilities: pktfate serve run as nobody with only the
// capabilities contrib/systemd/pktfate.service grants (what systemd's
// DynamicUser and AmbientCapabilities give it) attaches everything: drops
// are counted by function name (kallsyms readable), in a namespace named
// by /run/netns and in one named by the process in it (its /proc entry
// readable), and netfilter drops carry their hook (the programs were
// attached inside that namespace).
func TestServeUnitCapabilities(t *testing.T) {
	testutil.RequireRoot(t)
	skipOutsideTestdata(t)
	tools := map[string]string{}
	for _, tool := range []string{"setpriv", "unshare", "nsenter", "bash"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			if testutil.InVM() != "" {
				t.Skipf("the VM matrix's guests carry no %s (util-linux): the host runs this test", tool)
			}
			t.Fatalf("%s not found: %v", tool, err)
		}
		tools[tool] = p
	}
	unit, err := os.ReadFile("../../contrib/systemd/pktfate.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "AmbientCapabilities="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	if len(caps) == 0 {
		t.Fatal("no AmbientCapabilities line in the unit")
	}
	list := "-all," + strings.Join(caps, ",")
	const closed, dropped = 47914, 47915

	// A namespace with a name, and one that only a process is in.
	name := fmt.Sprintf("pktfate-servecaps-%d", os.Getpid())
	named, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testutil.AddRule(ctx, named, "nftables", "udp4", "LOCAL_IN", "DROP", dropped); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(tools["unshare"], "--net", tools["bash"], "-c", "ip link set lo up && exec sleep 300")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	hpid := holder.Process.Pid
	waitFor(t, "the process in its own namespace", 10*time.Second, func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", hpid))
		return strings.TrimSpace(string(comm)) == "sleep"
	}, &syncBuffer{})

	bin := pktfateBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil { // nobody must reach the binary
		t.Fatal(err)
	}
	p := &serveProc{stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(tools["setpriv"], "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps="+list, "--ambient-caps="+list,
		"--bounding-set="+list, bin, "serve", "--listen", "127.0.0.1:0", fmt.Sprintf("udp and (dst port %d or dst port %d)", closed, dropped))
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	deadline := time.Now().Add(60 * time.Second)
	for p.addr == "" {
		if m := servingRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
		} else {
			p.checkRunning(t, deadline, "print its address")
		}
	}
	for code, _, _ := p.get(t, "/healthz", ""); code != 200; code, _, _ = p.get(t, "/healthz", "") {
		p.checkRunning(t, deadline, "become healthy")
	}
	if strings.Contains(p.stderr.String(), "kallsyms is not readable") {
		t.Errorf("CAP_SYSLOG not enough to read kallsyms: %s", p.stderr.String())
	}
	loop := netip.MustParseAddr("127.0.0.1")
	sendUDP(t, named, "udp4", netip.AddrPortFrom(loop, closed), 3)
	sendUDP(t, named, "udp4", netip.AddrPortFrom(loop, dropped), 2)
	send := exec.Command(tools["nsenter"], "-t", fmt.Sprint(hpid), "-n", tools["bash"], "-c",
		fmt.Sprintf("for i in 1 2 3 4; do echo x > /dev/udp/127.0.0.1/%d; done", closed))
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("sending in the process's namespace: %v %s", err, out)
	}
	byProcess := fmt.Sprintf("sleep[%d]", hpid)
	fams := p.waitMetrics(t, "drops counted as nobody", func(f families) bool {
		a, _ := f.sum(metrics.NameDropped, map[string]string{"netns": name})
		b, _ := f.sum(metrics.NameDropped, map[string]string{"netns": byProcess})
		return a >= 5 && b >= 4
	})
	noSocket := 0.0
	for _, fn := range []string{"__udp4_lib_rcv", "udp_rcv"} {
		n, _ := fams.sum(metrics.NameDropped, map[string]string{"netns": name, "reason": "NO_SOCKET", "location": fn})
		noSocket += n
	}
	if noSocket != 3 {
		t.Errorf("%v NO_SOCKET drops by function name in %s, want 3", noSocket, name)
	}
	if n, _ := fams.sum(metrics.NameDropped, map[string]string{"netns": byProcess, "reason": "NO_SOCKET"}); n != 4 {
		t.Errorf("%v NO_SOCKET drops in the namespace labelled %s, want 4", n, byProcess)
	}
	if nf, _ := fams.sum(metrics.NameUp, map[string]string{"observer": "nf"}); nf == 1 {
		if n, _ := fams.sum(metrics.NameDropped, map[string]string{"netns": name, "reason": "NETFILTER_DROP", "hook": "LOCAL_IN", "location": "nft_do_chain"}); n != 2 {
			t.Errorf("%v NETFILTER_DROP drops with their hook and function, want 2", n)
		}
	} else if testutil.InVM() == "" {
		t.Error("nf does not run on the host as nobody with the unit's capabilities")
	}
	p.stop(t)
}

// dashboardQueries returns the PromQL of every panel of the Grafana
// dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../contrib/grafana/pktfate.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("contrib/grafana/pktfate.json: %v", err)
	}
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

// TestGrafanaDashboard: the dashboard is JSON Grafana can import and
// queries only metrics docs/metrics.md documents (TestServePrometheus
// runs every query against a real Prometheus).
func TestGrafanaDashboard(t *testing.T) {
	skipOutsideTestdata(t)
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	qs := dashboardQueries(t)
	if len(qs) < 10 {
		t.Fatalf("%d queries in the dashboard", len(qs))
	}
	names := regexp.MustCompile(`pktfate_[a-z_]+`)
	for _, q := range qs {
		for _, n := range names.FindAllString(q, -1) {
			if !strings.Contains(string(doc), "`"+n+"`") {
				t.Errorf("dashboard query %s uses %s, which docs/metrics.md does not document", q, n)
			}
		}
	}
}

// skipOutsideTestdata skips a test of files outside testdata/ (docs/,
// contrib/) in the VM matrix, whose guests carry only the testdata/
// folders: they do not depend on the kernel, and the host runs them.
func skipOutsideTestdata(t *testing.T) {
	t.Helper()
	if testutil.InVM() != "" {
		t.Skip("checks docs/ and contrib/, which the VM matrix does not ship (only testdata/): the host runs this test")
	}
}
