package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Marker secrets of the fuzz seeds: the secret parts of the seeded tasks
// hold them, and no error may show one.
var fuzzMarkers = []string{"Mk-0ld-S3cret-4e1f", "Mk-N3w-S3cret-77b0", "Mk-Adm1n-S3cret-c2", "Mk-Mask-S3cret-9a", "31415926535897"}

// fuzzTasks are valid tasks, one per runner, whose secrets are markers.
func fuzzTasks() []Task {
	at := time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.FixedZone("", 3600))
	base := Task{
		SchemaVersion: SchemaVersion, ID: "t-1", RotationID: "r-1", Step: 1, Host: "gw",
		Runner: RunnerLocal, RecordUID: "alice", CreatedAt: at, ExpiresAt: at.Add(time.Minute),
		Script: Script{Name: "a.sh", Title: "A", Command: "/bin/sh", Content: []byte("exit 0\n"), TimeoutMS: 1000},
		Secret: &TaskSecret{
			// base64 of {"newPassword":"Mk-N3w-S3cret-77b0"}
			Stdin: []byte("eyJuZXdQYXNzd29yZCI6Ik1rLU4zdy1TM2NyZXQtNzdiMCJ9\n"),
			Mask:  []string{"Mk-0ld-S3cret-4e1f", "Mk-N3w-S3cret-77b0", "Mk-Mask-S3cret-9a"},
		},
	}
	ssh := base
	ssh.Runner, ssh.Target = RunnerSSH, "m1"
	ssh.Connection = &Connection{Protocol: "ssh", Host: "10.0.0.5", Port: 22, HostKey: "ssh-ed25519 AAAA"}
	ssh.Secret = &TaskSecret{
		Stdin: base.Secret.Stdin, Mask: base.Secret.Mask,
		Credential: &Credential{Login: "root", Password: "Mk-Adm1n-S3cret-c2", PrivateKey: "Mk-Adm1n-S3cret-c2", Passphrase: "31415926535897"},
	}
	winrm := ssh
	winrm.Runner = RunnerWinRM
	winrm.Connection = &Connection{Protocol: "winrm", Host: "win", Port: 5986, HTTPS: true, CACert: "-----BEGIN CERTIFICATE-----"}
	web := base
	web.Runner = RunnerHTTP
	web.Request = &Request{Method: "POST", URL: "https://x/{{.Uid}}", Headers: map[string]string{"A": "b"}, Body: "{}", ExpectStatus: []int{200, 204}}
	rot := base
	rot.Runner, rot.Step = RunnerRotate, 2
	rot.Rotation = &Rotation{Kind: "postgresql", Login: "app", Database: "db", SSLMode: "disable", Rollback: true}
	rot.Connection = &Connection{Protocol: "postgresql", Host: "db", Port: 5432}
	rot.Secret = &TaskSecret{
		Mask: base.Secret.Mask, NewPassword: "Mk-N3w-S3cret-77b0", OldPassword: "Mk-0ld-S3cret-4e1f",
		Credential: &Credential{Login: "postgres", Password: "Mk-Adm1n-S3cret-c2"},
	}
	retry := base
	retry.Script.RetryOnInterrupt = true
	return []Task{base, ssh, winrm, web, rot, retry}
}

// FuzzDecodeTask checks that DecodeTask never panics, that its errors wrap
// ErrInvalidTask and never show a value of the task's secret part, and that
// a task it accepts re-encodes to a task it decodes to the same value.
func FuzzDecodeTask(f *testing.F) {
	for _, task := range fuzzTasks() {
		good, err := json.Marshal(task)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(good)
		// The secret values where a wrong type makes the decoder complain.
		f.Add(bytes.Replace(good, []byte(`"Mk-N3w-S3cret-77b0"`), []byte(`31415926535897`), 1))
		f.Add(bytes.Replace(good, []byte(`"mask":[`), []byte(`"mask":[31415926535897,`), 1))
		f.Add(bytes.Replace(good, []byte(`"schema_version":1`), []byte(`"schema_version":2`), 1))
		f.Add(good[:len(good)/2])
		// Sealed: the secret travels as an opaque box.
		task.Secret, task.SealedSecret = nil, []byte("an opaque sealed box")
		sealed, err := json.Marshal(task)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
	}
	f.Add([]byte(`{"schema_version":1}`))
	f.Add([]byte(`{"secret":{"stdin":"Mk-0ld-S3cret-4e1f"}}`))
	f.Add([]byte(`{"secret":{"credential":{"password":{"Mk-0ld-S3cret-4e1f":1}}}}`))
	f.Add([]byte(`{"secret":{"mask":"Mk-0ld-S3cret-4e1f"},"step":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		task, err := DecodeTask(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidTask) {
				t.Fatalf("error does not wrap ErrInvalidTask: %v", err)
			}
			checkNoSecret(t, data, err, "secret")
			return
		}
		if err := task.Validate(); err != nil {
			t.Fatalf("decoded task does not validate: %v", err)
		}
		enc, err := json.Marshal(task)
		if err != nil {
			t.Fatalf("encode a decoded task: %v", err)
		}
		again, err := DecodeTask(enc)
		if err != nil {
			t.Fatalf("decode a re-encoded task: %v\n%s", err, enc)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", enc, enc2)
		}
		// "+00:00" reads as the local zone when it is UTC and writes back
		// as "Z": the instants are compared, not their locations.
		// An empty "headers", "expect_status" or "sealed_secret" decodes
		// to an empty map or slice and is omitted when encoded (omitempty),
		// so it decodes back as nil: the same on the wire.
		for _, p := range []*Task{&task, &again} {
			p.CreatedAt, p.ExpiresAt = p.CreatedAt.UTC(), p.ExpiresAt.UTC()
			if len(p.SealedSecret) == 0 {
				p.SealedSecret = nil
			}
			if r := p.Request; r != nil {
				if len(r.Headers) == 0 {
					r.Headers = nil
				}
				if len(r.ExpectStatus) == 0 {
					r.ExpectStatus = nil
				}
			}
		}
		if !reflect.DeepEqual(again, task) {
			t.Fatalf("round trip changed the task:\n got %+v\nwant %+v", again, task)
		}
	})
}

// FuzzDecodeResult checks that DecodeResult never panics, refuses what it
// cannot read with a decode or version error, and that a result it accepts
// re-encodes to the same result.
func FuzzDecodeResult(f *testing.F) {
	started := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	for _, r := range []RotationResult{
		{UID: "alice", Command: "/bin/sh a.sh", System: SystemLinux, Title: "A", Name: "a.sh", Success: true, Stdout: "ok\n", Stderr: "",
			SchemaVersion: SchemaVersion, RotationID: "r-1", Step: 1, Host: "gw", Worker: "gw-a", Attempt: 1,
			StartedAt: started, FinishedAt: started.Add(time.Second), DurationMS: 1000},
		{UID: "m1", System: SystemWindows, Name: "u.ps1", Stdout: "********\n", Stderr: "denied", StdoutTruncated: true, StderrTruncated: true,
			SchemaVersion: SchemaVersion, RotationID: "r-2", Step: 3, Host: "win", ExitCode: 3, Error: "timed out after 20s"},
	} {
		good, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(good)
	}
	f.Add([]byte(`{"schema_version":99}`))
	f.Add([]byte(`{"schema_version":1,"uid":"x","started_at":"0001-01-01T01:00:00+01:00"}`))
	f.Add([]byte(`{"schema_version":1,"step":1e3,"exit_code":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResult(data)
		if err != nil {
			var syntax *json.SyntaxError
			var typ *json.UnmarshalTypeError
			var parse *time.ParseError
			if !errors.Is(err, ErrUnsupportedVersion) && !errors.As(err, &syntax) && !errors.As(err, &typ) &&
				!errors.As(err, &parse) && !strings.Contains(err.Error(), "Time.UnmarshalJSON") {
				t.Fatalf("unexpected error %T: %v", errors.Unwrap(err), err)
			}
			return
		}
		enc, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encode a decoded result: %v", err)
		}
		again, err := DecodeResult(enc)
		if err != nil {
			t.Fatalf("decode a re-encoded result: %v\n%s", err, enc)
		}
		// A zero instant written with an offset is omitted (omitzero): the
		// instants are compared, not their locations.
		for _, p := range []*RotationResult{&r, &again} {
			p.StartedAt, p.FinishedAt = p.StartedAt.UTC(), p.FinishedAt.UTC()
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip changed the result:\n got %+v\nwant %+v", again, r)
		}
	})
}

// checkNoSecret fails when err shows a marker that data holds under a
// top-level secret key (JSON matches keys without case) and nowhere else.
func checkNoSecret(t *testing.T, data []byte, err error, secretKeys ...string) {
	t.Helper()
	msg := err.Error()
	var shown []string
	for _, m := range fuzzMarkers {
		if strings.Contains(msg, m) {
			shown = append(shown, m)
		}
	}
	if len(shown) == 0 {
		return
	}
	secret, public, ok := jsonTokens(data, secretKeys)
	if !ok {
		// A syntax error shows one character, never a marker.
		t.Fatalf("error on malformed JSON shows a marker: %v", err)
	}
	for _, m := range shown {
		if containsPart(secret, m) && !containsPart(public, m) {
			t.Fatalf("error shows secret %q: %v", m, err)
		}
	}
}

func containsPart(values []string, m string) bool {
	for _, v := range values {
		if strings.Contains(v, m) {
			return true
		}
	}
	return false
}

// jsonTokens returns the strings and number literals of a JSON document,
// split into those under a top-level key in secretKeys and all the others
// (keys included). ok is false when data is not one valid JSON value.
func jsonTokens(data []byte, secretKeys []string) (secret, public []string, ok bool) {
	if !json.Valid(data) {
		return nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(depth int, inSecret bool) error
	add := func(s string, inSecret bool) {
		if inSecret {
			secret = append(secret, s)
		} else {
			public = append(public, s)
		}
	}
	walk = func(depth int, inSecret bool) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				for dec.More() {
					k, err := dec.Token()
					if err != nil {
						return err
					}
					key, _ := k.(string)
					isSecret := inSecret
					if depth == 0 {
						for _, s := range secretKeys {
							isSecret = isSecret || strings.EqualFold(key, s)
						}
					}
					add(key, inSecret)
					if err := walk(depth+1, isSecret); err != nil {
						return err
					}
				}
				_, err = dec.Token() // '}'
				return err
			case '[':
				for dec.More() {
					if err := walk(depth+1, inSecret); err != nil {
						return err
					}
				}
				_, err = dec.Token() // ']'
				return err
			}
		case string:
			add(v, inSecret)
		case json.Number:
			add(v.String(), inSecret)
		}
		return nil
	}
	if err := walk(0, false); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, false
	}
	return secret, public, true
}
