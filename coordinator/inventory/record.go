package inventory

import (
	"github.com/postrotate/postrotate/payload"
)

// PayloadRecord returns the record as the payload package describes it. A
// field value becomes a list of values: a scalar or object gives one value,
// a list gives its items, nil gives none. Values are copied: changing the
// result does not change the inventory.
func (r *Record) PayloadRecord() payload.Record {
	pr := payload.Record{UID: r.UID, Type: r.Type, Title: r.Title}
	if len(r.Fields) > 0 {
		pr.Fields = make([]payload.Field, 0, len(r.Fields))
	}
	for _, f := range r.Fields {
		pr.Fields = append(pr.Fields, payload.Field{
			Type:   f.Type,
			Label:  f.Label,
			Value:  values(f.Value),
			Secret: f.Secret,
		})
	}
	return pr
}

// values spreads a field value into its list of values.
func values(v any) []any {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		if len(v) == 0 {
			return nil
		}
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = deepCopy(item)
		}
		return out
	default:
		return []any{deepCopy(v)}
	}
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = deepCopy(item)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			out[k] = deepCopy(item)
		}
		return out
	default:
		return v
	}
}
