package payload

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenCase is one golden vector: testdata/<name>.input.json is the Input;
// <name>.stdin the exact stdin bytes; <name>.params.json and
// <name>.records.json the JSON inside them (plus a newline), for review.
type goldenCase struct {
	name string
	in   Input
}

func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.input.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.input.json")
	}
	var cases []goldenCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var in Input
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases = append(cases, goldenCase{strings.TrimSuffix(filepath.Base(f), ".input.json"), in})
	}
	return cases
}

func golden(t *testing.T, name, ext string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+ext)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file\n got: %q\nwant: %q", path, got, want)
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := Build(c.in)
			if err != nil {
				t.Fatal(err)
			}
			stdin, err := p.Encode()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, ".stdin", stdin)

			js, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(stdin), "\n"))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, ".params.json", append(js, '\n'))
			recs, err := base64.StdEncoding.DecodeString(p.Records)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, ".records.json", append(recs, '\n'))

			// The line is exactly one line of padded standard base64.
			if n := bytes.Count(stdin, []byte("\n")); n != 1 || stdin[len(stdin)-1] != '\n' {
				t.Errorf("stdin has %d newlines, want exactly one, at the end", n)
			}

			got, err := Decode(stdin)
			if err != nil {
				t.Fatal(err)
			}
			if got != p {
				t.Errorf("Decode(Encode(p)) = %+v, want %+v", got, p)
			}
			dicts, err := got.RecordDicts()
			if err != nil {
				t.Fatal(err)
			}
			want := inputRecords(c.in)
			if len(dicts) != len(want) {
				t.Fatalf("got %d record dicts, want %d", len(dicts), len(want))
			}
			for i, d := range dicts {
				if !slicesEqual(d.Keys(), want[i].Dict().Keys()) {
					t.Errorf("records[%d] keys = %q, want %q", i, d.Keys(), want[i].Dict().Keys())
				}
			}
		})
	}
}

// inputRecords lists in's records in records-array order.
func inputRecords(in Input) []Record {
	var recs []Record
	if in.Configuration != nil {
		recs = append(recs, *in.Configuration)
	}
	if in.Resource != nil {
		recs = append(recs, *in.Resource)
	}
	recs = append(recs, in.Additional...)
	return append(recs, in.User)
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}
