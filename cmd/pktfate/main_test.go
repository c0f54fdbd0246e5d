package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := realMain([]string{"--version"}, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "pktfate ") {
		t.Errorf("--version: rc %d, output %q", rc, out.String())
	}
	out.Reset()
	if rc := realMain([]string{"trace", "-h"}, &out, &errb); rc != 0 || !strings.Contains(errb.String(), "--filter-netns") && !strings.Contains(errb.String(), "-filter-netns") {
		t.Errorf("trace -h: rc %d, stderr %q", rc, errb.String())
	}
}

// TestBadInput checks that every user mistake gets one clear line and exit
// status 2, before anything is attached (these run without privileges).
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"trace", "--snaplen", "9999"}, "--snaplen 9999 out of range"},
		{[]string{"trace", "--filter-fate", "maybe"}, `--filter-fate "maybe"`},
		{[]string{"trace", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"trace", "--source", "carrier-pigeon"}, `--source "carrier-pigeon": unknown source`},
		{[]string{"trace", "--duration", "-1s"}, "--duration must not be negative"},
		{[]string{"trace", "udp", "port"}, `bad filter expression "udp port": can't parse filter expression: syntax error`},
		{[]string{"trace", "--filter-mark", "ten"}, `--filter-mark "ten": want MARK or MARK/MASK`},
		{[]string{"trace", "--filter-mark", "1/0"}, "mask must be a non-zero number"},
		{[]string{"trace", "--filter-netns", "no-such-ns-pktfate"}, `--filter-netns "no-such-ns-pktfate": no such network namespace`},
		{[]string{"trace", "--filter-ifname", "nosuchif0"}, `--filter-ifname "nosuchif0": no such interface`},
	} {
		var out, errb bytes.Buffer
		rc := realMain(tc.args, &out, &errb)
		msg := errb.String()
		if rc != 2 {
			t.Errorf("%q: exit status %d, want 2 (stderr %q)", tc.args, rc, msg)
		}
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%q: stderr %q does not say %q", tc.args, msg, tc.want)
		}
		if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
			t.Errorf("%q: stderr has a stack trace: %q", tc.args, msg)
		}
	}
}

func TestParseMark(t *testing.T) {
	for _, tc := range []struct {
		in         string
		mark, mask uint32
	}{
		{"", 0, 0},
		{"16", 16, 0xffffffff},
		{"0x10/0xff", 0x10, 0xff},
		{"0x1ff/0xff", 0xff, 0xff},
	} {
		m, k, err := parseMark(tc.in)
		if err != nil || m != tc.mark || k != tc.mask {
			t.Errorf("parseMark(%q) = %#x, %#x, %v; want %#x, %#x", tc.in, m, k, err, tc.mark, tc.mask)
		}
	}
}

func TestOutputFileNotWritable(t *testing.T) {
	cfg := traceConfig{OutputFile: filepath.Join(t.TempDir(), "missing-dir", "out.ndjson")}
	_, err := openSinks(cfg, []string{"ebpf"}, 0, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "output file not writable") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("openSinks to a missing directory: %v", err)
	}
}

// TestOutputsDistinct: two outputs naming one file are refused before
// anything is attached, however the path is spelt.
func TestOutputsDistinct(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cap")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--output-file", p, "--output-pcapng", p},
		{"--output-file", p, "--record", dir + "/./cap"},
		{"--output-pcapng", dir + "/new", "--ready-file", dir + "/new"},
	} {
		_, err := parseTrace(args, io.Discard)
		if !errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "name the same file") {
			t.Errorf("%v: %v, want a usage error naming the clash", args, err)
		}
	}
	if _, err := parseTrace([]string{"--output-file", p, "--output-pcapng", p + ".pcapng"}, io.Discard); err != nil {
		t.Errorf("distinct files refused: %v", err)
	}
}
