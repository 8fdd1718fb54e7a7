package payload

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Input is what a post-rotation script is told about one rotation.
type Input struct {
	// Configuration is the PAM Configuration (the provider); may be nil.
	Configuration *Record
	// Resource is the PAM Machine, Database or Directory; may be nil.
	Resource *Record
	// Additional are the credential records attached with the script, in
	// attachment order.
	Additional []Record
	// User is the PAM User record whose password was rotated.
	User Record
	// NewPassword is the password just set. Required.
	NewPassword string
	// OldPassword is the password it replaced; empty on a first rotation.
	OldPassword string
	// Login is the "user" key. When empty, the first value of User's first
	// field of type "login" is used.
	Login string
}

// Params is the JSON object a script reads, base64-encoded, from stdin.
// Encoded, its keys come in this order: providerRecordUid,
// resourceRecordUid, userRecordUid, newPassword, oldPassword, user, records.
type Params struct {
	ProviderRecordUID string `json:"providerRecordUid"`
	ResourceRecordUID string `json:"resourceRecordUid"`
	UserRecordUID     string `json:"userRecordUid"`
	NewPassword       string `json:"newPassword"`
	OldPassword       string `json:"oldPassword"`
	User              string `json:"user"`
	// Records is the standard base64 of the JSON array of record
	// dictionaries (see [Record.Dict]).
	Records string `json:"records"`
}

// Build validates in and returns the Params a script receives for it.
//
// The records array holds, in order, the dictionaries of the
// Configuration, the Resource, every Additional record and the User; a nil
// Configuration or Resource is left out, and so is its uid (""). An error
// wraps [ErrInvalidInput] and names the record and field at fault: a record
// without uid, a field with neither label nor type, a value that is not
// JSON-compatible or a string that is not valid UTF-8 (encoding/json would
// silently alter it), or an empty NewPassword.
func Build(in Input) (Params, error) {
	type entry struct {
		what string
		rec  Record
	}
	var recs []entry
	if in.Configuration != nil {
		recs = append(recs, entry{"configuration", *in.Configuration})
	}
	if in.Resource != nil {
		recs = append(recs, entry{"resource", *in.Resource})
	}
	for i, r := range in.Additional {
		recs = append(recs, entry{fmt.Sprintf("additional[%d]", i), r})
	}
	recs = append(recs, entry{"user", in.User})

	dicts := make([]*Dict, 0, len(recs))
	for _, e := range recs {
		if err := e.rec.validate(e.what); err != nil {
			return Params{}, err
		}
		dicts = append(dicts, e.rec.Dict())
	}
	if in.NewPassword == "" {
		return Params{}, invalid("newPassword is empty")
	}
	for _, s := range []struct{ name, v string }{
		{"newPassword", in.NewPassword},
		{"oldPassword", in.OldPassword},
		{"login", in.Login},
	} {
		if !utf8.ValidString(s.v) {
			return Params{}, invalid("%s is not valid UTF-8", s.name)
		}
	}

	records, err := marshalCompact(dicts)
	if err != nil {
		return Params{}, invalid("records: cannot encode to JSON")
	}
	p := Params{
		UserRecordUID: in.User.UID,
		NewPassword:   in.NewPassword,
		OldPassword:   in.OldPassword,
		User:          in.Login,
		Records:       base64.StdEncoding.EncodeToString(records),
	}
	if in.Configuration != nil {
		p.ProviderRecordUID = in.Configuration.UID
	}
	if in.Resource != nil {
		p.ResourceRecordUID = in.Resource.UID
	}
	if p.User == "" {
		p.User = in.User.login()
	}
	return p, nil
}

// login returns the first value of r's first field of type "login" if it is
// a string, else "".
func (r Record) login() string {
	for _, f := range r.Fields {
		if f.Type == "login" {
			if len(f.Value) > 0 {
				s, _ := f.Value[0].(string)
				return s
			}
			return ""
		}
	}
	return ""
}

// Encode returns the exact bytes a script reads on stdin: the standard
// base64 ('=' padded, on one line) of p as compact UTF-8 JSON without HTML
// escaping, then "\n".
//
// Encode refuses (with an error wrapping [ErrMalformed]) what [Decode] would
// refuse: a string that is not valid UTF-8, or Records that do not hold a
// JSON array of record dictionaries. So Decode(Encode(p)) gives p back.
func (p Params) Encode() ([]byte, error) {
	for _, s := range []struct{ name, v string }{
		{"providerRecordUid", p.ProviderRecordUID},
		{"resourceRecordUid", p.ResourceRecordUID},
		{"userRecordUid", p.UserRecordUID},
		{"newPassword", p.NewPassword},
		{"oldPassword", p.OldPassword},
		{"user", p.User},
	} {
		if !utf8.ValidString(s.v) {
			return nil, malformed("params: %s is not valid UTF-8", s.name)
		}
	}
	if _, err := p.RecordDicts(); err != nil {
		return nil, err
	}
	js, err := marshalCompact(p)
	if err != nil {
		return nil, malformed("params: cannot encode to JSON")
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(js))+1)
	base64.StdEncoding.Encode(out, js)
	out[len(out)-1] = '\n'
	return out, nil
}

// Decode parses what a script reads on stdin. It accepts the line with or
// without its trailing "\n" (or "\r\n") and is strict about everything else:
// one line of standard, padded base64 (no line breaks inside, no URL
// alphabet, no white space), holding valid UTF-8 JSON, an object with exactly
// the seven keys of [Params], each a string, and records as [Params.RecordDicts]
// accepts it. An error wraps [ErrMalformed]; it says where the problem is
// (a key, a byte offset) and never quotes the input.
func Decode(line []byte) (Params, error) {
	b := line
	if t, ok := bytes.CutSuffix(b, []byte("\n")); ok {
		b, _ = bytes.CutSuffix(t, []byte("\r"))
	}
	if len(b) == 0 {
		return Params{}, malformed("line: empty")
	}
	js, err := decodeBase64("line", b)
	if err != nil {
		return Params{}, err
	}
	p, err := parseParams(js)
	if err != nil {
		return Params{}, err
	}
	if _, err := p.RecordDicts(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// parseParams parses the JSON object of the line.
func parseParams(js []byte) (Params, error) {
	const what = "params"
	if !utf8.Valid(js) {
		return Params{}, malformed("%s: not valid UTF-8", what)
	}
	var p Params
	keys := []struct {
		name string
		dst  *string
		seen bool
	}{
		{"providerRecordUid", &p.ProviderRecordUID, false},
		{"resourceRecordUid", &p.ResourceRecordUID, false},
		{"userRecordUid", &p.UserRecordUID, false},
		{"newPassword", &p.NewPassword, false},
		{"oldPassword", &p.OldPassword, false},
		{"user", &p.User, false},
		{"records", &p.Records, false},
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	tok, err := dec.Token()
	if err != nil {
		return Params{}, jsonError(what, err)
	}
	if tok != json.Delim('{') {
		return Params{}, malformed("%s: not a JSON object", what)
	}
	for n := 0; dec.More(); n++ {
		tok, err := dec.Token()
		if err != nil {
			return Params{}, jsonError(what, err)
		}
		name, _ := tok.(string)
		i := -1
		for j := range keys {
			if keys[j].name == name {
				i = j
				break
			}
		}
		if i < 0 {
			return Params{}, malformed("%s: key %d is not a known key", what, n)
		}
		if keys[i].seen {
			return Params{}, malformed("%s: duplicate key %q", what, name)
		}
		keys[i].seen = true
		tok, err = dec.Token()
		if err != nil {
			return Params{}, jsonError(what, err)
		}
		s, ok := tok.(string)
		if !ok {
			return Params{}, malformed("%s: %q is %s, not a string", what, name, kind(tok))
		}
		*keys[i].dst = s
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return Params{}, jsonError(what, err)
	}
	if err := trailing(dec, what); err != nil {
		return Params{}, err
	}
	for _, k := range keys {
		if !k.seen {
			return Params{}, malformed("%s: missing key %q", what, k.name)
		}
	}
	return p, nil
}

// RecordDicts decodes p.Records: standard, padded base64 of a UTF-8 JSON
// array of objects, each with a string "uid" (not empty) and a string
// "title". An error wraps [ErrMalformed] and names the record by index.
func (p Params) RecordDicts() ([]*Dict, error) {
	js, err := decodeBase64("records", []byte(p.Records))
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(js) {
		return nil, malformed("records: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError("records", err)
	}
	if tok != json.Delim('[') {
		return nil, malformed("records: not a JSON array")
	}
	dicts := []*Dict{}
	for i := 0; dec.More(); i++ {
		what := fmt.Sprintf("records[%d]", i)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, jsonError(what, err)
		}
		if raw[0] != '{' {
			return nil, malformed("%s: not a JSON object", what)
		}
		d := &Dict{}
		if err := d.parse(raw, what); err != nil {
			return nil, err
		}
		for _, k := range []string{"uid", "title"} {
			v, ok := d.Get(k)
			if !ok {
				return nil, malformed("%s: missing key %q", what, k)
			}
			if _, ok := v.(string); !ok {
				return nil, malformed("%s: %q is %s, not a string", what, k, kind(v))
			}
		}
		if d.String("uid") == "" {
			return nil, malformed("%s: uid is empty", what)
		}
		dicts = append(dicts, d)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, jsonError("records", err)
	}
	if err := trailing(dec, "records"); err != nil {
		return nil, err
	}
	return dicts, nil
}

// decodeBase64 decodes b, which must be standard, padded base64 with nothing
// else in it: encoding/base64 would skip line breaks, and a wrapped line
// breaks scripts that read one line.
func decodeBase64(what string, b []byte) ([]byte, error) {
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '+', c == '/', c == '=':
		case c == '\n' || c == '\r':
			return nil, malformed("%s: line break at byte %d: the base64 must be one line, with nothing after it", what, i)
		default:
			return nil, malformed("%s: byte %d is not in the standard base64 alphabet", what, i)
		}
	}
	if len(b)%4 != 0 {
		return nil, malformed("%s: length %d is not a multiple of 4 (missing '=' padding?)", what, len(b))
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Strict().Decode(out, b)
	if err != nil {
		return nil, malformed("%s: invalid base64: %v", what, err) // CorruptInputError holds an offset only
	}
	return out[:n], nil
}

// kind describes a JSON token or value without its content.
func kind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64, json.Number:
		return "a number"
	case string:
		return "a string"
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// marshalCompact returns v as compact JSON without HTML escaping and
// without the newline json.Encoder appends.
func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	trimNewline(&buf)
	return buf.Bytes(), nil
}
