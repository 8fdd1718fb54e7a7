package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that it returns
// either a consistent inventory or a *ValidationError with problems.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: 1\nrecords: [{uid: a, type: login, fields: [{type: text, value: &x [*x]}]}]\n"))
	f.Add([]byte("{\"version\": 1, \"records\": [{\"uid\": \"u\", \"type\": \"pamUser\", \"rotation\": {\"type\": \"general\", \"schedule\": \"CRON_TZ=X\"}}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse(data, "testdata")
		if err != nil {
			if inv != nil {
				t.Fatal("both an inventory and an error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %T %v is not a ValidationError with problems", err, err)
			}
			_ = ve.Error()
			return
		}
		if inv.Version != 1 || len(inv.Records) == 0 {
			t.Fatalf("accepted inventory: version %d, %d records", inv.Version, len(inv.Records))
		}
		seen := make(map[string]bool)
		for i := range inv.Records {
			r := &inv.Records[i]
			if r.UID == "" || seen[r.UID] || r.Type == "" || r.Title == "" {
				t.Fatalf("accepted record %d: %+v", i, r)
			}
			seen[r.UID] = true
			_ = r.PayloadRecord()
			_, _, _ = r.Login(), r.Password(), r.NOOP()
			if r.Rotation != nil {
				if _, ok := inv.Record(r.Rotation.Configuration); !ok {
					t.Fatalf("record %d: rotation without a configuration", i)
				}
				if _, err := r.Rotation.ParsedSchedule(); err != nil {
					t.Fatalf("record %d: accepted schedule does not parse: %v", i, err)
				}
				if err := r.Rotation.Complexity.Validate(); err != nil {
					t.Fatalf("record %d: accepted complexity is invalid: %v", i, err)
				}
			}
			for _, s := range r.Scripts {
				if s.Timeout <= 0 || s.Name == "" || s.Title == "" {
					t.Fatalf("record %d: script %+v", i, s)
				}
			}
		}
	})
}
