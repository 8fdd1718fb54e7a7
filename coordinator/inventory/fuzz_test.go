package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Marker secrets of the fuzz seeds, held by field values: no problem may
// show one.
var fuzzMarkers = []string{"Mk-0ld-S3cret-4e1f", "Mk-Adm1n-S3cret-c2", "31415926535897"}

// fuzzSeedMarkers is an inventory whose field values (secret or not, in
// every shape) and a misspelt field key hold the markers.
const fuzzSeedMarkers = `version: 1
records:
  - uid: cfg
    type: pamConfiguration
    gateway: gw
    fields:
      - {type: secret, value: Mk-Adm1n-S3cret-c2}
      - {type: text, value: {k: Mk-Adm1n-S3cret-c2, Mk-0ld-S3cret-4e1f: x}}
  - uid: m1
    type: pamMachine
    connection: {protocol: ssh, host: m1, admin: adm}
  - uid: adm
    type: login
    fields:
      - {type: password, value: &pw Mk-Adm1n-S3cret-c2}
      - {type: pinCode, value: 31415926535897}
      - {type: text, label: l, value: [Mk-0ld-S3cret-4e1f, 31415926535897], secret: true}
      - {type: password, valeu: Mk-0ld-S3cret-4e1f}
  - uid: alice
    type: pamUser
    fields:
      - {type: login, value: alice}
      - {type: password, value: Mk-0ld-S3cret-4e1f}
      - {type: text, value: *pw}
    rotation: {type: general, resource: m1}
`

// FuzzParse checks that no input makes Parse panic or hang, that it
// returns either a consistent inventory or a *ValidationError whose
// problems have messages, and that no problem shows a field's value.
func FuzzParse(f *testing.F) {
	addParseSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, examples bool) {
		dir := "testdata"
		if examples {
			dir = filepath.Join("..", "..", "examples")
		}
		inv, err := parseWithin(t, data, dir, 10*time.Second)
		if err != nil {
			if inv != nil {
				t.Fatal("both an inventory and an error")
			}
			checkRefused(t, data, err)
			return
		}
		checkAccepted(t, inv)
	})
}

// addParseSeeds adds the seeds of FuzzParse: every testdata file, the
// example inventory (read relative to the examples), the marker inventory
// and variants of it, the end-to-end tests' inventory, and aliases that
// recurse or expand.
func addParseSeeds(f *testing.F) {
	add := func(file string, examples bool) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, examples)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		add(file, false)
	}
	add(filepath.Join("..", "..", "examples", "inventory.yaml"), true)
	f.Add([]byte(fuzzSeedMarkers), false)
	f.Add([]byte(strings.ReplaceAll(fuzzSeedMarkers, "type: pamUser", "type: pamuser")), false)
	f.Add([]byte(strings.ReplaceAll(fuzzSeedMarkers, "value: Mk-0ld-S3cret-4e1f}", "value: Mk-0ld-S3cret-4e1f, value: x}")), false)
	f.Add([]byte(strings.ReplaceAll(fuzzSeedMarkers, "- {type: login, value: alice}", "- {<<: {type: password, value: Mk-0ld-S3cret-4e1f}, 31415926535897: 1}")), false)
	// The end-to-end tests' inventory.
	f.Add([]byte(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw, scripts: [{file: scripts/notify.sh, timeout: 20s}]}
  - {uid: m1, type: pamMachine, worker: m1, scripts: [{file: scripts/restart.sh, timeout: 60s}]}
  - uid: alice
    type: pamUser
    fields: [{type: login, value: alice}, {type: password, value: Mk-0ld-S3cret-4e1f}]
    rotation: {type: scripts_only, resource: m1, configuration: cfg}
    scripts: [{file: scripts/db.sh, timeout: 20s, retry_on_interrupt: true}, {http: {url: "https://x/{{.Uid}}", headers: {A: b}, expect_status: [200]}}]
`), false)
	f.Add([]byte("version: 1\nrecords: [{uid: a, type: login, fields: [{type: text, value: &x [*x]}]}]\n"), false)
	f.Add([]byte("{\"version\": 1, \"records\": [{\"uid\": \"u\", \"type\": \"pamUser\", \"rotation\": {\"type\": \"general\", \"schedule\": \"CRON_TZ=X\"}}]}"), false)
	f.Add([]byte("a: &a [*a, *a]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nversion: 1\nrecords: [*c]\n"), false)
}

// checkRefused checks the error of a refused input: a *ValidationError
// whose problems have messages and show no field value.
func checkRefused(t *testing.T, data []byte, err error) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) == 0 || !errors.Is(err, ErrInvalidInventory) {
		t.Fatalf("error %T %v is not a ValidationError with problems", err, err)
	}
	for _, p := range ve.Problems {
		if p.Message == "" || p.Line < 0 {
			t.Fatalf("problem %+v", p)
		}
	}
	checkNoFieldValue(t, data, ve.Error())
}

// checkAccepted checks that an accepted inventory holds what its users
// rely on.
func checkAccepted(t *testing.T, inv *Inventory) {
	t.Helper()
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
			checkAcceptedRotation(t, inv, i, r.Rotation)
		}
		for _, s := range r.Scripts {
			if s.Timeout <= 0 || s.Name == "" || s.Title == "" {
				t.Fatalf("record %d: script %+v", i, s)
			}
		}
	}
}

// checkAcceptedRotation checks the accepted rotation of record i: it has
// a configuration, a schedule that parses and a valid complexity.
func checkAcceptedRotation(t *testing.T, inv *Inventory, i int, rot *Rotation) {
	t.Helper()
	if _, ok := inv.Record(rot.Configuration); !ok {
		t.Fatalf("record %d: rotation without a configuration", i)
	}
	if _, err := rot.ParsedSchedule(); err != nil {
		t.Fatalf("record %d: accepted schedule does not parse: %v", i, err)
	}
	if err := rot.Complexity.Validate(); err != nil {
		t.Fatalf("record %d: accepted complexity is invalid: %v", i, err)
	}
}

// parseWithin runs Parse, failing the test when it does not return in d.
func parseWithin(t *testing.T, data []byte, dir string, d time.Duration) (*Inventory, error) {
	t.Helper()
	type result struct {
		inv *Inventory
		err error
	}
	done := make(chan result, 1)
	go func() {
		inv, err := Parse(data, dir)
		done <- result{inv, err}
	}()
	select {
	case r := <-done:
		return r.inv, r.err
	case <-time.After(d):
		t.Fatalf("Parse did not return within %s", d)
		return nil, nil
	}
}

// anchorName matches YAML anchors, aliases and tags, which messages may
// name.
var anchorName = regexp.MustCompile(`[&*!][^\s,\[\]{}]+`)

// checkNoFieldValue fails when msg shows a marker that data holds in a
// field's value (or under an unknown key of a field) and nowhere else.
func checkNoFieldValue(t *testing.T, data []byte, msg string) {
	t.Helper()
	var shown []string
	for _, m := range fuzzMarkers {
		if strings.Contains(msg, m) {
			shown = append(shown, m)
		}
	}
	if len(shown) == 0 {
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// Malformed YAML: the message may name an anchor or a tag, never
		// a value.
		for _, m := range shown {
			if !strings.Contains(strings.Join(anchorName.FindAllString(string(data), -1), " "), m) {
				t.Fatalf("problem on malformed YAML shows %q:\n%s", m, msg)
			}
		}
		return
	}
	c := classifier{visited: map[*yaml.Node]bool{}}
	c.document(&doc)
	for _, m := range shown {
		if c.in(c.secret, m) && !c.in(c.public, m) {
			t.Fatalf("problem shows the field value %q:\n%s", m, msg)
		}
	}
}

// classifier sorts the scalars of an inventory document into field values
// (secret) and everything else (public), by where each is written. An
// alias in a public place makes its target public too.
type classifier struct {
	secret, public []string
	visited        map[*yaml.Node]bool
}

func (c *classifier) in(list []string, m string) bool {
	for _, s := range list {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// all adds every scalar under n (keys, values, anchors, tags).
func (c *classifier) all(n *yaml.Node, secret bool) {
	if n == nil {
		return
	}
	if !secret {
		if c.visited[n] {
			return
		}
		c.visited[n] = true
	}
	list := &c.public
	if secret {
		list = &c.secret
	}
	*list = append(*list, n.Value)
	c.public = append(c.public, n.Anchor, n.Tag)
	if n.Kind == yaml.AliasNode && !secret {
		c.all(n.Alias, false)
	}
	for _, child := range n.Content {
		c.all(child, secret)
	}
}

func (c *classifier) document(doc *yaml.Node) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		c.all(doc, false)
		return
	}
	c.mapping(doc.Content[0], func(key string, v *yaml.Node) bool {
		if key != "records" || v.Kind != yaml.SequenceNode {
			return false
		}
		for _, rec := range v.Content {
			c.record(rec)
		}
		return true
	})
}

// record classifies a record: its fields apart, everything is public.
func (c *classifier) record(rec *yaml.Node) {
	if rec.Kind != yaml.MappingNode {
		c.all(rec, false)
		return
	}
	c.mapping(rec, func(key string, v *yaml.Node) bool {
		if key != "fields" || v.Kind != yaml.SequenceNode {
			return false
		}
		for _, field := range v.Content {
			c.field(field)
		}
		return true
	})
}

// field classifies a field: its value, and the keys the decoder hides
// with their values, are secret.
func (c *classifier) field(field *yaml.Node) {
	if field.Kind != yaml.MappingNode {
		c.all(field, false)
		return
	}
	for i := 0; i+1 < len(field.Content); i += 2 {
		k, v := field.Content[i], field.Content[i+1]
		switch {
		case k.Value == "value" || k.Kind != yaml.ScalarNode || k.Tag == "!!merge" || !strings.Contains(" type label secret ", " "+k.Value+" "):
			// A value, or a key the decoder hides.
			c.all(k, k.Value != "value")
			c.all(v, true)
		default:
			c.all(k, false)
			c.all(v, false)
		}
	}
}

// mapping walks the pairs of m, calling f for each; the pairs f does not
// take are public.
func (c *classifier) mapping(m *yaml.Node, f func(key string, v *yaml.Node) bool) {
	c.public = append(c.public, m.Anchor, m.Tag)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		c.all(k, false)
		if !f(k.Value, v) {
			c.all(v, false)
		}
	}
}
