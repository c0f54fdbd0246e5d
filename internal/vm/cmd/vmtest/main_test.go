package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRaceFlag(t *testing.T) {
	// parseFlags finds the repo root from the working directory; the
	// guests' copy of the repo has no go.mod.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	tests := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"-race"}, "./..."},
		{[]string{"-race=false"}, ""},
		{[]string{"-race=./tracer/...,./cmd/pktfate"}, "./tracer/...,./cmd/pktfate"},
		{[]string{"-race", "-kernel", "6.1"}, "./..."},
	}
	for _, tt := range tests {
		cfg, err := parseFlags(tt.args)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if got := strings.Join(cfg.Race, ","); got != tt.want {
			t.Errorf("parseFlags(%q).Race = %q, want %q", tt.args, got, tt.want)
		}
	}
	if _, err := parseFlags([]string{"-retries", "-1"}); err == nil {
		t.Error("-retries -1 accepted")
	}
}
