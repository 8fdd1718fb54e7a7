package payload

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPythonReadsStdin feeds every golden stdin to a Python script that reads
// it exactly as Keeper's scripts do, and checks what Python decoded against
// the Input: the parameters, every record's keys in order, and every value.
func TestPythonReadsStdin(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("/usr/bin/python3 not found: install python3")
	}
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
			cmd := exec.Command(python, filepath.Join("testdata", "keeper_reader.py"))
			cmd.Stdin = bytes.NewReader(stdin)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("python: %v\n%s", err, stderr.Bytes())
			}
			var got struct {
				Params     map[string]string
				Records    []map[string]any
				ParamKeys  []string
				RecordKeys [][]string
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("python printed %q: %v", out, err)
			}

			wantParamKeys := []string{"providerRecordUid", "resourceRecordUid", "userRecordUid", "newPassword", "oldPassword", "user", "records"}
			if !reflect.DeepEqual(got.ParamKeys, wantParamKeys) {
				t.Errorf("param keys = %q, want %q", got.ParamKeys, wantParamKeys)
			}
			wantParams := map[string]string{
				"providerRecordUid": uidOf(c.in.Configuration),
				"resourceRecordUid": uidOf(c.in.Resource),
				"userRecordUid":     c.in.User.UID,
				"newPassword":       c.in.NewPassword,
				"oldPassword":       c.in.OldPassword,
				"user":              p.User,
				"records":           p.Records,
			}
			if !reflect.DeepEqual(got.Params, wantParams) {
				t.Errorf("params = %q\nwant     %q", got.Params, wantParams)
			}

			recs := inputRecords(c.in)
			if len(got.Records) != len(recs) {
				t.Fatalf("python saw %d records, want %d", len(got.Records), len(recs))
			}
			for i, r := range recs {
				d := r.Dict()
				if !reflect.DeepEqual(got.RecordKeys[i], d.Keys()) {
					t.Errorf("records[%d] keys = %q\nwant %q", i, got.RecordKeys[i], d.Keys())
				}
				for _, k := range d.Keys() {
					v, _ := d.Get(k)
					if !reflect.DeepEqual(got.Records[i][k], v) {
						t.Errorf("records[%d][%q] = %#v, want %#v", i, k, got.Records[i][k], v)
					}
				}
			}
		})
	}
}

// TestShellReadsStdin checks the two shell idioms Keeper's scripts use:
// `IFS= read -r line` and `base64 -d` on the whole of stdin.
func TestShellReadsStdin(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("sh not found in PATH: install a POSIX shell")
	}
	if _, err := exec.LookPath("base64"); err != nil {
		t.Skip("base64 not found in PATH: install coreutils")
	}
	scripts := map[string]string{
		"read":   `IFS= read -r line; printf '%s' "$line" | base64 -d`,
		"cat":    `cat | base64 -d`,
		"base64": `base64 -d`,
	}
	for _, c := range goldenCases(t) {
		p, err := Build(c.in)
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		want, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(stdin), "\n"))
		if err != nil {
			t.Fatal(err)
		}
		for name, script := range scripts {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				cmd := exec.Command(sh, "-c", script)
				cmd.Stdin = bytes.NewReader(stdin)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s: %v\n%s", script, err, stderr.Bytes())
				}
				if !bytes.Equal(out, want) {
					t.Errorf("%s decoded %q, want %q", script, out, want)
				}
			})
		}
	}
}

func uidOf(r *Record) string {
	if r == nil {
		return ""
	}
	return r.UID
}
