package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is a mistake in a scenario file: where it is and what is wrong.
type FieldError struct {
	File  string
	Line  int    // 0 when unknown
	Field string // "expect[1].reason"; "" for the whole file
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ParseFile reads and validates one scenario file.
func ParseFile(path string) (*Scenario, error) { return parseFile(path, nil) }

func parseFile(path string, k *Kernel) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FieldError{File: path, Msg: fmt.Sprintf("reading scenario: %v", err)}
	}
	return parse(path, data, k)
}

// Parse validates a scenario read from file. Every mistake found is
// returned (errors.Join of *FieldError), each naming the file, the line
// and the field. Drop reasons are checked against the kernels pktfate
// supports.
func Parse(file string, data []byte) (*Scenario, error) { return parse(file, data, nil) }

func parse(file string, data []byte, k *Kernel) (*Scenario, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, nil, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: 1, Msg: "a scenario is a YAML mapping (name:, description:, topology:, ...)"}
	}
	var raw rawScenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, yamlError(file, root.Content[0], err)
	}
	v := &validator{file: file, root: root.Content[0]}
	s := v.scenario(&raw)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	if err := s.checkReasons(k); err != nil {
		return nil, err
	}
	return s, nil
}

// yamlError turns yaml.v3's "line N: ..." messages into FieldErrors.
func yamlError(file string, root *yaml.Node, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, m := range msgs {
		fe := &FieldError{File: file, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			fe.Line, _ = strconv.Atoi(sm[1])
			fe.Msg = sm[2]
			if root != nil {
				fe.Field = fieldAtLine(root, fe.Line, "")
			}
		}
		fe.Msg = strings.ReplaceAll(fe.Msg, "scenario.raw", "")
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

// fieldAtLine finds the path of the key (or sequence item) on a line.
func fieldAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			if k.Line == line {
				return p
			}
			if f := fieldAtLine(val, line, p); f != "" {
				return f
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode && c.Line == line {
				return p
			}
			if f := fieldAtLine(c, line, p); f != "" {
				return f
			}
		}
	}
	return ""
}

// Load reads scenarios from files and directories (every *.yaml and *.yml
// file in a directory, in name order). Names must be unique. With k, the
// drop reasons are also checked against the kernel they will run on: a
// name it has is accepted even if no supported kernel has it, and an
// expectation for this kernel must name a reason it has.
func Load(paths []string, k *Kernel) ([]*Scenario, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, &FieldError{File: p, Msg: fmt.Sprintf("reading scenario: %v", errors.Unwrap(err))}
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing scenarios in %s: %w", p, err)
		}
		if len(found) == 0 {
			return nil, &FieldError{File: p, Msg: "no scenario files (*.yaml) in this directory"}
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	var out []*Scenario
	var errs []error
	byName := map[string]string{}
	for _, f := range files {
		s, err := parseFile(f, k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, ok := byName[s.Name]; ok {
			errs = append(errs, &FieldError{File: f, Line: 1, Field: "name", Msg: fmt.Sprintf("%q is also the name of %s", s.Name, other)})
			continue
		}
		byName[s.Name] = f
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}
