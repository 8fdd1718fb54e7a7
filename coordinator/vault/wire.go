package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/postrotate/postrotate/coordinator/inventory"
)

// entrySchema is the schema_version of a stored entry.
const entrySchema = 1

// storedEntry is an Entry as stored (JSON, then sealed).
type storedEntry struct {
	SchemaVersion     int        `json:"schema_version"`
	Record            wireRecord `json:"record"`
	Source            string     `json:"source"`
	Current           Version    `json:"current"`
	InventoryPassword string     `json:"inventory_password"`
	History           []Version  `json:"history,omitempty"`
	Pending           *Version   `json:"pending,omitempty"`
	LastRotation      *Rotation  `json:"last_rotation,omitempty"`
	InInventory       bool       `json:"in_inventory"`
	UpdatedAt         time.Time  `json:"updated_at"`
}

// wireRecord is an inventory.Record as stored. Every field but Fields is
// encoded as encoding/json does by default (the inventory types have no JSON
// tags, so by their Go names); Fields shadows the embedded one because a
// field value (any) would not survive a plain round trip: numbers would come
// back as float64.
type wireRecord struct {
	inventory.Record
	Fields []wireField `json:"Fields"`
}

// wireField is an inventory.Field whose Value keeps its Go type.
type wireField struct {
	Type   string    `json:"type"`
	Label  string    `json:"label,omitempty"`
	Value  wireValue `json:"value"`
	Secret bool      `json:"secret,omitempty"`
}

// wireValue encodes a field value with its type, as a one-key object:
// {"s": string}, {"b": bool}, {"i": int}, {"i64": int64}, {"u64": uint64},
// {"f": float64}, {"l": [values]}, {"m": {key: value}}; nil is null. These
// are the shapes inventory.Field documents; any other type is an error.
type wireValue struct{ v any }

// wireValueJSON is the decoding form of a wireValue.
type wireValueJSON struct {
	S   *string               `json:"s,omitempty"`
	B   *bool                 `json:"b,omitempty"`
	I   *int                  `json:"i,omitempty"`
	I64 *int64                `json:"i64,omitempty"`
	U64 *uint64               `json:"u64,omitempty"`
	F   *float64              `json:"f,omitempty"`
	L   *[]wireValue          `json:"l,omitempty"`
	M   *map[string]wireValue `json:"m,omitempty"`
}

var errValueShape = errors.New("stored field value: want exactly one of s, b, i, i64, u64, f, l, m")

// MarshalJSON implements json.Marshaler.
func (w wireValue) MarshalJSON() ([]byte, error) {
	var j wireValueJSON
	switch v := w.v.(type) {
	case nil:
		return []byte("null"), nil
	case string:
		j.S = &v
	case bool:
		j.B = &v
	case int:
		j.I = &v
	case int64:
		j.I64 = &v
	case uint64:
		j.U64 = &v
	case float64:
		j.F = &v
	case []any:
		l := make([]wireValue, len(v))
		for i, item := range v {
			l[i] = wireValue{item}
		}
		j.L = &l
	case map[string]any:
		m := make(map[string]wireValue, len(v))
		for k, item := range v {
			m[k] = wireValue{item}
		}
		j.M = &m
	default:
		// The type only, never the value: it may be a secret.
		return nil, fmt.Errorf("unsupported field value type %T", v)
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler.
func (w *wireValue) UnmarshalJSON(data []byte) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		w.v = nil
		return nil
	}
	var j wireValueJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.keys() != 1 {
		return errValueShape
	}
	w.v = j.value()
	return nil
}

// keys returns how many of the type keys are set.
func (j *wireValueJSON) keys() int {
	n := 0
	for _, set := range []bool{j.S != nil, j.B != nil, j.I != nil, j.I64 != nil, j.U64 != nil, j.F != nil, j.L != nil, j.M != nil} {
		if set {
			n++
		}
	}
	return n
}

// value returns the value of the first type key set.
func (j *wireValueJSON) value() any {
	switch {
	case j.S != nil:
		return *j.S
	case j.B != nil:
		return *j.B
	case j.I != nil:
		return *j.I
	case j.I64 != nil:
		return *j.I64
	case j.U64 != nil:
		return *j.U64
	case j.F != nil:
		return *j.F
	case j.L != nil:
		l := make([]any, len(*j.L))
		for i, item := range *j.L {
			l[i] = item.v
		}
		return l
	case j.M != nil:
		m := make(map[string]any, len(*j.M))
		for k, item := range *j.M {
			m[k] = item.v
		}
		return m
	}
	return nil
}

func toWireRecord(r inventory.Record) wireRecord {
	w := wireRecord{Record: r}
	w.Record.Fields = nil
	if r.Fields != nil {
		w.Fields = make([]wireField, len(r.Fields))
		for i, f := range r.Fields {
			w.Fields[i] = wireField{Type: f.Type, Label: f.Label, Value: wireValue{f.Value}, Secret: f.Secret}
		}
	}
	return w
}

func (w wireRecord) record() inventory.Record {
	r := w.Record
	r.Fields = nil
	if w.Fields != nil {
		r.Fields = make([]inventory.Field, len(w.Fields))
		for i, f := range w.Fields {
			r.Fields[i] = inventory.Field{Type: f.Type, Label: f.Label, Value: f.Value.v, Secret: f.Secret}
		}
	}
	return r
}

func (e Entry) stored() storedEntry {
	return storedEntry{
		SchemaVersion:     entrySchema,
		Record:            toWireRecord(e.Record),
		Source:            e.Source,
		Current:           e.Current,
		InventoryPassword: e.InventoryPassword,
		History:           e.History,
		Pending:           e.Pending,
		LastRotation:      e.LastRotation,
		InInventory:       e.InInventory,
		UpdatedAt:         e.UpdatedAt,
	}
}

func (s storedEntry) entry() Entry {
	return Entry{
		Record:            s.Record.record(),
		Source:            s.Source,
		Current:           s.Current,
		InventoryPassword: s.InventoryPassword,
		History:           s.History,
		Pending:           s.Pending,
		LastRotation:      s.LastRotation,
		InInventory:       s.InInventory,
		UpdatedAt:         s.UpdatedAt,
	}
}

// encodeEntry returns e's JSON. Errors name the record, never a value.
func encodeEntry(e Entry) ([]byte, error) {
	data, err := json.Marshal(e.stored())
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", e.Record.UID, err)
	}
	return data, nil
}

func decodeEntry(data []byte) (Entry, error) {
	var s storedEntry
	if err := json.Unmarshal(data, &s); err != nil {
		return Entry{}, err
	}
	return s.entry(), nil
}
