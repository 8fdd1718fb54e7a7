package payload

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Field is one field of a vault record.
type Field struct {
	// Type is Keeper's field type: "login", "password", "host",
	// "pamHostname", "keyPair", "url", ...
	Type string `json:"type"`
	// Label is the field's label; the dictionary key when not empty.
	Label string `json:"label,omitempty"`
	// Value holds zero, one or several values, each JSON-compatible: string,
	// bool, nil, a number (float64, any int or uint type, json.Number),
	// map[string]any, []any, map[string]string or []string.
	Value []any `json:"value"`
	// Secret marks the field secret in addition to the secret field types
	// (see [Record.Secrets]).
	Secret bool `json:"secret,omitempty"`
}

// Record is a vault record: a PAM Configuration, a PAM Machine, Database or
// Directory, a PAM User, or any record attached to a script.
type Record struct {
	UID    string  `json:"uid"`
	Type   string  `json:"type"`
	Title  string  `json:"title"`
	Fields []Field `json:"fields"`
}

// Dict returns Keeper's dictionary for r: "uid", "title", then one key per
// field in field order.
//
// A field's key is its Label, or its Type when Label is empty. A field with
// exactly one value gives that value (a host field gives its object, e.g.
// {"hostName": "10.0.0.5", "port": "22"}); several values give an array; no
// value gives nil (JSON null). A key already present gets "_2", "_3", ...
// appended, the first that is free: since "uid" and "title" come first, a
// field labelled "title" becomes "title_2".
//
// Dict does not validate r; [Build] does.
func (r Record) Dict() *Dict {
	d := &Dict{}
	d.Set("uid", r.UID)
	d.Set("title", r.Title)
	for _, f := range r.Fields {
		d.Set(freeKey(d, f.key()), f.dictValue())
	}
	return d
}

// key returns the field's dictionary key before de-duplication.
func (f Field) key() string {
	if f.Label != "" {
		return f.Label
	}
	return f.Type
}

// dictValue returns the field's value as the dictionary holds it.
func (f Field) dictValue() any {
	switch len(f.Value) {
	case 0:
		return nil
	case 1:
		return f.Value[0]
	default:
		return slices.Clone(f.Value)
	}
}

// freeKey returns key if d does not hold it, else the first of key_2,
// key_3, ... that d does not hold.
func freeKey(d *Dict, key string) string {
	if _, ok := d.Get(key); !ok {
		return key
	}
	for n := 2; ; n++ {
		k := key + "_" + strconv.Itoa(n)
		if _, ok := d.Get(k); !ok {
			return k
		}
	}
}

// validate checks that r can be sent to a script. The error names r by what
// and its field by index, never a value.
func (r Record) validate(what string) error {
	if r.UID == "" {
		return invalid("%s: missing uid", what)
	}
	what = fmt.Sprintf("%s (uid %q)", what, r.UID)
	if !utf8.ValidString(r.UID) {
		return invalid("%s: uid is not valid UTF-8", what)
	}
	if !utf8.ValidString(r.Title) {
		return invalid("%s: title is not valid UTF-8", what)
	}
	for i, f := range r.Fields {
		if f.key() == "" {
			return invalid("%s: fields[%d]: no label and no type", what, i)
		}
		if !utf8.ValidString(f.key()) {
			return invalid("%s: fields[%d]: label or type is not valid UTF-8", what, i)
		}
		for j, v := range f.Value {
			if err := checkValue(v); err != nil {
				return invalid("%s: fields[%d] (%s): value[%d]: %s", what, i, f.Type, j, err)
			}
		}
	}
	return nil
}

// valueError says why a value cannot go into JSON. It never holds the value.
type valueError string

func (e valueError) Error() string { return string(e) }

// checkValue reports whether v is JSON-compatible and can be sent unchanged:
// strings must be valid UTF-8 (encoding/json would silently replace invalid
// bytes, changing a password) and numbers finite.
func checkValue(v any) error { return checkDepth(v, 0) }

// maxDepth bounds the nesting of a value, so a cyclic []any or map is an
// error rather than a stack overflow.
const maxDepth = 100

func checkDepth(v any, depth int) error {
	if depth > maxDepth {
		return valueError(fmt.Sprintf("nested more than %d levels deep", maxDepth))
	}
	switch v := v.(type) {
	case nil, bool,
		int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64:
		return nil
	case string:
		if !utf8.ValidString(v) {
			return valueError("string is not valid UTF-8")
		}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return valueError("number is not finite")
		}
	case float32:
		return checkDepth(float64(v), depth)
	case json.Number:
		if _, err := strconv.ParseFloat(string(v), 64); err != nil || !json.Valid([]byte(v)) {
			return valueError("json.Number is not a JSON number")
		}
	case []any:
		for _, e := range v {
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	case []string:
		for _, e := range v {
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range v {
			if err := checkDepth(k, depth+1); err != nil {
				return err
			}
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]string:
		for k, e := range v {
			if err := checkDepth(k, depth+1); err != nil {
				return err
			}
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	default:
		return valueError(fmt.Sprintf("unsupported type %T", v))
	}
	return nil
}
