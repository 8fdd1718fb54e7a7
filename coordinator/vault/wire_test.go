package vault

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/inventory"
)

// richInventory has field values of every shape the inventory decodes.
const richInventory = `version: 1
records:
  - uid: cfg
    type: pamConfiguration
    gateway: gw-1
  - uid: admin
    type: login
    fields:
      - {type: login, value: root}
      - {type: password, value: Adm1n-Pw}
  - uid: web-01
    type: pamMachine
    title: Web 01
    connection: {protocol: ssh, host: 10.0.0.5, port: 2222, admin: admin, known_hosts: known_hosts}
    fields:
      - {type: pamHostname, value: {hostName: web-01.internal, port: "22"}}
      - {type: pamHostname, label: numeric port, value: {hostName: db.internal, port: 5432}}
      - type: keyPair
        value: {publicKey: "ssh-ed25519 AAAAC3Nza", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n"}
      - {type: text, label: tags, value: [a, 1, 2.5, true, null, {k: [x, {deep: -7}]}]}
      - {type: text, label: empty list, value: []}
      - {type: text, label: empty object, value: {}}
      - {type: text, label: none}
      - {type: text, label: big, value: 18446744073709551615}
      - {type: text, label: negative, value: -9223372036854775808}
      - {type: text, label: float, value: 0.1}
      - {type: text, label: exponent, value: 1e300}
      - {type: text, label: flag, value: false}
      - {type: pinCode, value: 1234}
      - {type: text, label: hidden, value: 42, secret: true}
    scripts:
      - {file: rotate.sh, title: Restart, timeout: 90s, records: [admin]}
  - uid: svc-user
    type: pamUser
    title: Service user
    fields:
      - {type: login, value: svc}
      - {type: password, value: [First-Pw, Second-Pw]}
    rotation:
      type: general
      resource: web-01
      schedule: every 24h
      complexity: {length: 40, special: 3, special_chars: "!#"}
      stop_on_failure: true
    scripts:
      - {file: rotate.sh, command: sh, retry_on_interrupt: true}
      - title: Notify
        http:
          url: "https://api.example.com/{{.User}}"
          headers: {Content-Type: application/json}
          body: '{"p": {{json .NewPassword}}}'
          expect_status: [200, 204]
`

// parseInventory writes rotate.sh and known_hosts next to the inventory and
// parses it.
func parseInventory(t testing.TB, yaml string) *inventory.Inventory {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"rotate.sh":   "#!/bin/sh\necho rotated\n",
		"known_hosts": "10.0.0.5 ssh-ed25519 AAAAC3Nza\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory.Parse([]byte(yaml), dir)
	if err != nil {
		t.Fatalf("parse inventory: %v", err)
	}
	return inv
}

func roundTrip(t *testing.T, r inventory.Record) inventory.Record {
	t.Helper()
	data, err := encodeEntry(Entry{Record: r})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	e, err := decodeEntry(data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return e.Record
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	inv := parseInventory(t, richInventory)
	for _, r := range inv.Records {
		t.Run(r.UID, func(t *testing.T) {
			t.Parallel()
			if got := roundTrip(t, r); !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip changed the record:\n got %#v\nwant %#v", got, r)
			}
		})
	}
	// The shapes the test means to cover are there.
	web, _ := inv.Record("web-01")
	for label, want := range map[string]any{"big": uint64(math.MaxUint64), "negative": math.MinInt64, "float": 0.1} {
		i := fieldIndex(web, label)
		if i < 0 || web.Fields[i].Value != want {
			t.Errorf("field %q: value %#v, want %#v", label, web.Fields[fieldIndex(web, label)].Value, want)
		}
	}
}

func fieldIndex(r *inventory.Record, label string) int {
	for i, f := range r.Fields {
		if f.Label == label {
			return i
		}
	}
	return -1
}

func TestRecordRoundTripGoTypes(t *testing.T) {
	t.Parallel()
	r := inventory.Record{UID: "u", Type: "login", Fields: []inventory.Field{
		{Type: "text", Label: "int64", Value: int64(-5)},
		{Type: "text", Label: "int", Value: 5},
		{Type: "text", Label: "uint64", Value: uint64(5)},
		{Type: "text", Label: "float", Value: float64(5)},
		{Type: "text", Label: "negative zero", Value: math.Copysign(0, -1)},
		{Type: "text", Label: "nested", Value: map[string]any{"l": []any{int64(1), uint64(2), 3, 4.0, "5", nil, []any{}, map[string]any{}}}},
	}}
	got := roundTrip(t, r)
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip changed the record:\n got %#v\nwant %#v", got, r)
	}
	if z := got.Fields[4].Value.(float64); !math.Signbit(z) {
		t.Fatal("negative zero lost its sign")
	}
}

// TestRecordRoundTripEveryField fills every field of inventory.Record, so
// that a field added to it later that does not survive the store fails here.
func TestRecordRoundTripEveryField(t *testing.T) {
	t.Parallel()
	var r inventory.Record
	fill(reflect.ValueOf(&r).Elem(), "r")
	if got := roundTrip(t, r); !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip changed the record:\n got %#v\nwant %#v", got, r)
	}
}

// fill sets every exported field reachable from v to a non-zero value.
func fill(v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(path)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(len(path)))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(len(path)))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(len(path)) + 0.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		fill(k, path+".key")
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, path+".value")
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	case reflect.Interface:
		v.Set(reflect.ValueOf([]any{path, 1, int64(2), uint64(3), 4.5, true, nil, map[string]any{"k": []any{path}}}))
	default:
		panic("fill: unhandled kind " + v.Kind().String() + " at " + path)
	}
}

func TestWireValueErrors(t *testing.T) {
	t.Parallel()
	r := inventory.Record{UID: "u", Fields: []inventory.Field{{Type: "password", Value: []string{"Secret-In-Odd-Type"}}}}
	_, err := encodeEntry(Entry{Record: r})
	if err == nil || strings.Contains(err.Error(), "Secret-In-Odd-Type") {
		t.Fatalf("encode of an unsupported value: err = %v", err)
	}
	for _, bad := range []string{`{}`, `{"s":"a","b":true}`, `{"x":1}`, `"bare"`, `{"i":1.5}`} {
		var w wireValue
		if err := json.Unmarshal([]byte(bad), &w); err == nil {
			t.Errorf("decoded %s as %#v", bad, w.v)
		}
	}
}
