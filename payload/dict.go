package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"unicode/utf8"
)

// Dict is Keeper's dictionary for one record, as a script sees it in the
// records array: "uid", "title", then one key per field in field order (see
// [Record.Dict]).
//
// A Dict is ordered: [Dict.MarshalJSON] writes the keys in insertion order
// and [Dict.UnmarshalJSON] keeps the order of the document, as Python's dict
// does. Values are JSON-compatible: string, float64 (ints when built by
// [Record.Dict]), bool, nil, map[string]any and []any. The zero Dict is empty
// and ready to use; a nil *Dict reads as empty.
type Dict struct {
	keys   []string
	values map[string]any
}

// Keys returns the keys in order. The slice is a copy.
func (d *Dict) Keys() []string {
	if d == nil {
		return nil
	}
	return slices.Clone(d.keys)
}

// Len returns the number of keys.
func (d *Dict) Len() int {
	if d == nil {
		return 0
	}
	return len(d.keys)
}

// Get returns the value of key and whether key is present. A present key may
// hold nil (a field with no value).
func (d *Dict) Get(key string) (any, bool) {
	if d == nil {
		return nil, false
	}
	v, ok := d.values[key]
	return v, ok
}

// String returns the value of key if it is a string, and "" otherwise.
func (d *Dict) String(key string) string {
	v, _ := d.Get(key)
	s, _ := v.(string)
	return s
}

// Set sets key to v. A new key goes last; an existing key keeps its place.
func (d *Dict) Set(key string, v any) {
	if d.values == nil {
		d.values = make(map[string]any)
	}
	if _, ok := d.values[key]; !ok {
		d.keys = append(d.keys, key)
	}
	d.values[key] = v
}

// MarshalJSON writes d as a compact JSON object with its keys in order and
// without HTML escaping. (json.Marshal escapes <, > and & in what a
// marshaler returns; to keep them, call MarshalJSON directly or use a
// json.Encoder with SetEscapeHTML(false).)
func (d Dict) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	buf.WriteByte('{')
	for i, k := range d.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := enc.Encode(k); err != nil {
			return nil, err
		}
		trimNewline(&buf)
		buf.WriteByte(':')
		if err := enc.Encode(d.values[k]); err != nil {
			return nil, err
		}
		trimNewline(&buf)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// UnmarshalJSON replaces d's content with the JSON object in b, keeping the
// document's key order. JSON null leaves d unchanged. Numbers become float64.
// A duplicate key, anything but an object, or invalid UTF-8 is an error
// wrapping [ErrMalformed].
func (d *Dict) UnmarshalJSON(b []byte) error {
	return d.parse(b, "object")
}

// parse is UnmarshalJSON with what naming the object in errors.
func (d *Dict) parse(b []byte, what string) error {
	if !utf8.Valid(b) {
		return malformed("%s: not valid UTF-8", what)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return jsonError(what, err)
	}
	if tok == nil {
		return trailing(dec, what)
	}
	if tok != json.Delim('{') {
		return malformed("%s: not a JSON object", what)
	}
	var nd Dict
	for n := 0; dec.More(); n++ {
		tok, err := dec.Token()
		if err != nil {
			return jsonError(what, err)
		}
		k, _ := tok.(string)
		if _, dup := nd.values[k]; dup {
			return malformed("%s: key %d is a duplicate", what, n)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return jsonError(what, err)
		}
		nd.Set(k, v)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return jsonError(what, err)
	}
	if err := trailing(dec, what); err != nil {
		return err
	}
	*d = nd
	return nil
}

// trailing returns an error if dec has anything left but white space.
func trailing(dec *json.Decoder, what string) error {
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("%s: data after the JSON value at byte %d", what, dec.InputOffset())
	}
	return nil
}

// trimNewline removes the newline json.Encoder.Encode appends.
func trimNewline(buf *bytes.Buffer) {
	if n := buf.Len(); n > 0 && buf.Bytes()[n-1] == '\n' {
		buf.Truncate(n - 1)
	}
}
