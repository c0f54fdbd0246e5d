package scenario

import (
	"bytes"
	"encoding/xml"
	"os"
	"testing"
)

func TestWriteJUnit(t *testing.T) {
	results := []*Result{
		{Name: "ok", File: "ok.yaml", Status: StatusPass, Seconds: 1.25, Improvements: []string{"e: drop reason NOT_SPECIFIED on 6.1 is now IP_INHDR"}},
		{Name: "bad", File: "bad.yaml", Status: StatusFail, Seconds: 2, Regressions: []string{"e: expected drop NO_SOCKET; 0 did", "f: gone"}},
		{Name: "flaky", File: "flaky.yaml", Status: StatusFlake, Seconds: 3, FirstAttempt: []string{"e: 0 did"}},
		{Name: "broken", File: "broken.yaml", Status: StatusError, Error: "setting up: nft: not found"},
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
			Cases []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Tests != 4 || doc.Failures != 1 || doc.Errors != 1 || len(doc.Suite.Cases) != 4 {
		t.Errorf("read back %+v", doc)
	}
	if f := doc.Suite.Cases[1].Failure; f == nil || f.Message != "e: expected drop NO_SOCKET; 0 did (and 1 more)" {
		t.Errorf("failure %+v", f)
	}
}
