package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
)

// Baseline records the fates observed for each scenario on one kernel, so
// a run on another kernel can be compared with it.
type Baseline struct {
	// Kernel is the release the baseline was recorded on (uname -r).
	Kernel    string                       `json:"kernel"`
	Scenarios map[string]*BaselineScenario `json:"scenarios"`
}

// BaselineScenario holds, per expectation name, the fates of the packets
// that expectation selects.
type BaselineScenario struct {
	Observed map[string][]Group `json:"observed"`
}

// ReadBaseline reads a baseline file.
func ReadBaseline(path string) (*Baseline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading baseline: %w", err)
	}
	var b Baseline
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("reading baseline %s: %w", path, err)
	}
	if b.Scenarios == nil {
		return nil, errors.New("reading baseline " + path + ": no \"scenarios\" object")
	}
	return &b, nil
}

// Update stores the results of passing (or flaky) scenarios; failed ones
// keep what the baseline had, so a regression is not recorded as normal.
func (b *Baseline) Update(kernel string, results []*Result) {
	b.Kernel = kernel
	if b.Scenarios == nil {
		b.Scenarios = map[string]*BaselineScenario{}
	}
	for _, r := range results {
		if !r.Status.Passed() && r.Status != StatusFlake {
			continue
		}
		b.Scenarios[r.Name] = &BaselineScenario{Observed: r.Observed}
	}
}

// Encode returns the baseline as indented JSON (map keys and groups
// sorted, so diffs between kernels stay readable).
func (b *Baseline) Encode() ([]byte, error) {
	for _, s := range b.Scenarios {
		for _, gs := range s.Observed {
			sort.SliceStable(gs, func(i, j int) bool { return gs[i].key() < gs[j].key() })
		}
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding baseline: %w", err)
	}
	return append(data, '\n'), nil
}

// Write writes the baseline (Encode) to a file.
func (b *Baseline) Write(path string) error {
	data, err := b.Encode()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing baseline: %w", err)
	}
	return nil
}
