package scenario

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// JUnit XML as CI systems read it (the Surefire flavour: a flaky test is
// a passing testcase with a flakyFailure element).
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Name    string       `xml:"name,attr"`
	Tests   int          `xml:"tests,attr"`
	Fails   int          `xml:"failures,attr"`
	Errors  int          `xml:"errors,attr"`
	Time    string       `xml:"time,attr"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Fails      int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Flaky     *junitMessage `xml:"flakyFailure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the results as one JUnit test suite; kernel is the
// release they ran on (a property of the suite). A flaky scenario is a
// passing testcase with a flakyFailure, and is named in the suite's
// "flaky" property; each known gap that did not hold is a skipped
// testcase of its own ("scenario: expectation"), named in "known_gaps".
func WriteJUnit(w io.Writer, kernel string, results []*Result) error {
	suite := junitSuite{Name: "pktfate check", Properties: []junitProperty{{Name: "kernel", Value: kernel}}}
	var total float64
	var flaky, gaps []string
	var gapCases []junitCase
	for _, r := range results {
		c := junitCase{Name: r.Name, Classname: "pktfate.scenarios", File: r.File, Time: fmt.Sprintf("%.3f", r.Seconds)}
		total += r.Seconds
		var out []string
		for _, s := range r.Improvements {
			out = append(out, "improvement: "+s)
		}
		for _, s := range r.Changes {
			out = append(out, "change: "+s)
		}
		for _, s := range r.Notes {
			out = append(out, "note: "+s)
		}
		switch r.Status {
		case StatusFail:
			suite.Fails++
			c.Failure = &junitMessage{Message: firstLine(r.Regressions), Type: "regression", Text: strings.Join(r.Regressions, "\n")}
		case StatusError:
			suite.Errors++
			c.Error = &junitMessage{Message: r.Error, Type: "error", Text: r.Error}
		case StatusFlake:
			c.Flaky = &junitMessage{Message: "failed, then passed when run again: " + firstLine(r.FirstAttempt), Type: "flake", Text: strings.Join(r.FirstAttempt, "\n")}
			out = append([]string{"flaky: failed on its first attempt, passed when run again"}, out...)
			flaky = append(flaky, r.Name)
		}
		for _, g := range r.Gaps {
			out = append(out, "known gap: "+g.String())
		}
		for _, s := range r.GapsClosed {
			out = append(out, "gap closed: "+s)
		}
		c.SystemOut = strings.Join(out, "\n")
		suite.Cases = append(suite.Cases, c)
		for _, g := range r.Gaps {
			name := r.Name + ": " + g.Expectation
			gaps = append(gaps, name)
			gapCases = append(gapCases, junitCase{Name: name, Classname: "pktfate.scenarios.known_gaps", File: r.File, Time: "0.000",
				Skipped: &junitMessage{Message: "known gap: " + g.Why, Type: "known_gap", Text: g.Detail}})
		}
	}
	suite.Cases = append(suite.Cases, gapCases...)
	suite.Skipped = len(gapCases)
	if len(flaky) > 0 {
		suite.Properties = append(suite.Properties, junitProperty{Name: "flaky", Value: strings.Join(flaky, ", ")})
	}
	if len(gaps) > 0 {
		suite.Properties = append(suite.Properties, junitProperty{Name: "known_gaps", Value: strings.Join(gaps, ", ")})
	}
	suite.Tests = len(suite.Cases)
	suite.Time = fmt.Sprintf("%.3f", total)
	doc := junitSuites{Name: "pktfate check", Tests: suite.Tests, Fails: suite.Fails, Errors: suite.Errors, Time: suite.Time, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("writing JUnit XML: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func firstLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	if len(lines) == 1 {
		return lines[0]
	}
	return fmt.Sprintf("%s (and %d more)", lines[0], len(lines)-1)
}
