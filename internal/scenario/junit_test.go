package scenario

import (
	"bytes"
	"encoding/xml"
	"os"
	"strings"
	"testing"
)

func TestWriteJUnit(t *testing.T) {
	results := []*Result{
		{Name: "ok", File: "ok.yaml", Status: StatusPass, Seconds: 1.25, Improvements: []string{"e: drop reason NOT_SPECIFIED on 6.1 is now IP_INHDR"}},
		{Name: "bad", File: "bad.yaml", Status: StatusFail, Seconds: 2, Regressions: []string{"e: expected drop NO_SOCKET; 0 did", "f: gone"}},
		{Name: "flaky", File: "flaky.yaml", Status: StatusFlake, Seconds: 3, FirstAttempt: []string{"e: 0 did"}},
		{Name: "broken", File: "broken.yaml", Status: StatusError, Error: "setting up: nft: not found"},
		{Name: "gap", File: "gap.yaml", Status: StatusGap, Seconds: 1, Gaps: []Gap{{Expectation: "read", Why: "reads are not reported", Detail: "0 did"}},
			GapsClosed: []string{"other: holds now"}},
	}
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, "6.18.44", results); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/junit.golden.xml"
	if os.Getenv("PKTFATE_UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, buf.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("JUnit output differs from %s (PKTFATE_UPDATE_GOLDEN=1 rewrites it):\n%s", golden, buf.Bytes())
	}
	// What a CI system reads back.
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Suite    struct {
			Skipped    int `xml:"skipped,attr"`
			Properties []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"properties>property"`
			Cases []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
				Flaky *struct {
					Message string `xml:"message,attr"`
				} `xml:"flakyFailure"`
				Skipped *struct {
					Message string `xml:"message,attr"`
				} `xml:"skipped"`
				SystemOut string `xml:"system-out"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	// Five scenarios and the known gap's own skipped testcase.
	if doc.Tests != 6 || doc.Failures != 1 || doc.Errors != 1 || doc.Suite.Skipped != 1 || len(doc.Suite.Cases) != 6 {
		t.Errorf("read back %+v", doc)
	}
	if c := doc.Suite.Cases[5]; c.Name != "gap: read" || c.Skipped == nil || c.Skipped.Message != "known gap: reads are not reported" {
		t.Errorf("known gap testcase %+v", c)
	}
	if c := doc.Suite.Cases[2]; c.Flaky == nil || !strings.HasPrefix(c.SystemOut, "flaky: failed on its first attempt") {
		t.Errorf("flaky testcase %+v", c)
	}
	props := map[string]string{}
	for _, p := range doc.Suite.Properties {
		props[p.Name] = p.Value
	}
	if props["flaky"] != "flaky" || props["known_gaps"] != "gap: read" || props["kernel"] != "6.18.44" {
		t.Errorf("properties %v", props)
	}
	if f := doc.Suite.Cases[1].Failure; f == nil || f.Message != "e: expected drop NO_SOCKET; 0 did (and 1 more)" {
		t.Errorf("failure %+v", f)
	}
}
