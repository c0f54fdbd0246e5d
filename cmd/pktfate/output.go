package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/pktfate/pktfate/fate"
	"github.com/pktfate/pktfate/internal/render"
)

// traceSinks are the outputs of one trace: the renderer (text or NDJSON,
// and the pcapng beside it), the recording and the live status line.
type traceSinks struct {
	renderer render.Renderer
	rec      *fate.Recorder
	live     *statusLine
	closers  []func() error
}

// Close closes every file opened (once).
func (s *traceSinks) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// createOutput creates an output file (mode 0600; under sudo, owned by the
// user who ran sudo, so that Wireshark run by that user opens it).
func (s *traceSinks) createOutput(path, flagName string) (*os.File, error) {
	_, existed := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s not writable: %w", flagName, err)
	}
	if existed != nil {
		giveToSudoUser(path)
	}
	s.closers = append(s.closers, func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s %s: %w", flagName, path, err)
		}
		return nil
	})
	return f, nil
}

// giveToSudoUser makes a file pktfate created under sudo belong to the
// user who ran sudo (SUDO_UID, SUDO_GID). Where that fails the file stays
// root's, as it would without this.
func giveToSudoUser(path string) {
	if os.Geteuid() != 0 {
		return
	}
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || uid == 0 {
		return
	}
	_ = os.Lchown(path, uid, gid)
}

// named names an output in its errors ("--output-pcapng cap.pcapng: write:
// no space left on device").
type named struct {
	what string
	r    render.Renderer
}

func (n named) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", n.what, err)
}

func (n named) Event(e *fate.Event) error     { return n.wrap(n.r.Event(e)) }
func (n named) Fate(f *fate.FateRecord) error { return n.wrap(n.r.Fate(f)) }
func (n named) Summary(s *fate.Summary) error { return n.wrap(n.r.Summary(s)) }
func (n named) Flush() error                  { return n.wrap(n.r.Flush()) }

func outputName(flagName, path string) string { return flagName + " " + path }

// namedWriter names a file in its write errors.
type namedWriter struct {
	what string
	w    io.Writer
}

func (n namedWriter) Write(p []byte) (int, error) {
	k, err := n.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%s: %w", n.what, err)
	}
	return k, err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// openSinks opens every output the flags ask for.
func openSinks(cfg traceConfig, observers []string, home uint32, stdout, stderr io.Writer) (*traceSinks, error) {
	s := &traceSinks{}
	out, what := stdout, "stdout"
	if cfg.OutputFile != "" && cfg.OutputFile != "-" {
		f, err := s.createOutput(cfg.OutputFile, "--output-file")
		if err != nil {
			return nil, err
		}
		out, what = f, outputName("--output-file", cfg.OutputFile)
	}
	if isTerminal(stderr) && cfg.Verbose == 0 {
		s.live = newStatusLine(stderr)
		if out == stdout {
			out = s.live.wrap(out)
		}
	}
	var main render.Renderer
	if cfg.OutputJSON {
		main = render.NewNDJSON(out)
	} else {
		main = newText(out, cfg, home)
	}
	rs := []render.Renderer{named{what, main}}
	if cfg.OutputPcapng != "" {
		pf, err := s.createOutput(cfg.OutputPcapng, "--output-pcapng")
		if err != nil {
			s.Close()
			return nil, err
		}
		pr, err := render.NewPcapng(pf, "pktfate "+version)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("--output-pcapng %s: %w", cfg.OutputPcapng, err)
		}
		pr.Correlated = len(observers) >= 2
		rs = append(rs, named{outputName("--output-pcapng", cfg.OutputPcapng), pr})
	}
	s.renderer = render.NewMulti(rs...)
	if cfg.Record != "" {
		if len(observers) < 2 {
			s.Close()
			return nil, fmt.Errorf("--record writes the correlator's input, and only one observer runs (%s): add a source with --source", strings.Join(observers, ","))
		}
		rf, err := s.createOutput(cfg.Record, "--record")
		if err != nil {
			s.Close()
			return nil, err
		}
		s.rec = fate.NewRecorder(namedWriter{outputName("--record", cfg.Record), rf})
	}
	return s, nil
}
