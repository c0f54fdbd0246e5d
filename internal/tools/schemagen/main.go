// Command schemagen writes docs/schema.json, the JSON Schema of pktfate's
// NDJSON lines, from their one definition: the types of fate/schema.go
// (their fields by reflection, their descriptions from the doc comments).
//
//	go run ./internal/tools/schemagen > docs/schema.json
//	go run ./internal/tools/schemagen -check docs/schema.json   # make test
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strings"

	"github.com/pktfate/pktfate/fate"
)

func main() {
	check := flag.String("check", "", "compare with this `FILE` instead of printing; exit 1 when it differs")
	src := flag.String("src", "fate/schema.go", "the Go file whose doc comments describe the fields")
	flag.Parse()
	docs, err := fieldDocs(*src)
	if err != nil {
		fmt.Fprintf(os.Stderr, "schemagen: %v\n", err)
		os.Exit(1)
	}
	out, err := generate(docs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "schemagen: %v\n", err)
		os.Exit(1)
	}
	if *check == "" {
		os.Stdout.Write(out)
		return
	}
	have, err := os.ReadFile(*check)
	if err != nil {
		fmt.Fprintf(os.Stderr, "schemagen: %v\n", err)
		os.Exit(1)
	}
	if !bytes.Equal(have, out) {
		fmt.Fprintf(os.Stderr, "schemagen: %s is stale: run go run ./internal/tools/schemagen > %s and commit\n", *check, *check)
		os.Exit(1)
	}
}

// fieldDocs reads the doc comments of every struct field and type in src,
// keyed "Type.Field" and "Type".
func fieldDocs(src string) (map[string]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("reading the doc comments: %w", err)
	}
	docs := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, sp := range g.Specs {
			ts, ok := sp.(*ast.TypeSpec)
			if !ok {
				continue
			}
			doc := g.Doc
			if ts.Doc != nil {
				doc = ts.Doc
			}
			docs[ts.Name.Name] = clean(doc.Text())
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			for _, fl := range st.Fields.List {
				for _, n := range fl.Names {
					docs[ts.Name.Name+"."+n.Name] = clean(fl.Doc.Text())
				}
			}
		}
	}
	return docs, nil
}

func clean(s string) string { return strings.Join(strings.Fields(s), " ") }

type gen struct {
	docs map[string]string
}

var (
	timeType   = reflect.TypeFor[fate.Time]()
	countsType = reflect.TypeFor[fate.Counts]()
	obsType    = reflect.TypeFor[fate.ObserverLines]()
	bytesType  = reflect.TypeFor[[]byte]()
)

// schemaOf returns the schema of a Go type.
func (g *gen) schemaOf(t reflect.Type) map[string]any {
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time", "description": "RFC 3339 in UTC with nine digits of nanoseconds"}
	case countsType:
		return map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "integer", "minimum": 0},
			"description": "counts by name, largest first"}
	case obsType:
		return map[string]any{"type": "object", "additionalProperties": g.object(reflect.TypeFor[fate.ObserverLine]()),
			"description": "each observer's part, by observer name, in report order"}
	case bytesType:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := g.schemaOf(t.Elem())
		s["type"] = []any{s["type"], "null"}
		return s
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schemaOf(t.Elem())}
	case reflect.Array:
		return map[string]any{"type": "array", "items": g.schemaOf(t.Elem()), "minItems": t.Len(), "maxItems": t.Len()}
	case reflect.Struct:
		return g.object(t)
	}
	panic(fmt.Sprintf("schemagen: no JSON Schema for %v", t))
}

// object returns the schema of a struct: its JSON fields (embedded structs
// inlined), required unless omitempty.
func (g *gen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "" {
				walk(f.Type)
				continue
			}
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" || name == "-" {
				continue
			}
			s := g.schemaOf(f.Type)
			if d := g.docs[t.Name()+"."+f.Name]; d != "" {
				s["description"] = d
			}
			props[name] = s
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
	}
	walk(t)
	o := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	if d := g.docs[t.Name()]; d != "" {
		o["description"] = d
	}
	return o
}

func generate(docs map[string]string) ([]byte, error) {
	g := &gen{docs: docs}
	line := func(t reflect.Type, typ string) map[string]any {
		o := g.object(t)
		o["properties"].(map[string]any)["type"] = map[string]any{"const": typ}
		return o
	}
	schema := map[string]any{
		"$schema":     "https://json-schema.org/draft/2020-12/schema",
		"$id":         "https://github.com/pktfate/pktfate/docs/schema.json",
		"title":       fmt.Sprintf("pktfate NDJSON lines, schema version %d", fate.SchemaVersion),
		"description": "Generated from fate/schema.go by internal/tools/schemagen; do not edit. Every line of pktfate trace --output-json is one of these; the summary line carries the schema version.",
		"oneOf": []any{
			map[string]any{"$ref": "#/$defs/event"},
			map[string]any{"$ref": "#/$defs/fate"},
			map[string]any{"$ref": "#/$defs/summary"},
		},
		"$defs": map[string]any{
			"event":   line(reflect.TypeFor[fate.EventLine](), fate.LineEvent),
			"fate":    line(reflect.TypeFor[fate.FateLine](), fate.LineFate),
			"summary": line(reflect.TypeFor[fate.SummaryLine](), fate.LineSummary),
		},
	}
	b, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
