package payload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrMalformed is wrapped by every error [Decode], [Params.RecordDicts],
// [Params.Encode] and [Dict.UnmarshalJSON] return for input that does not
// follow the stdin contract. The message says what is wrong and where (a key
// name or a byte offset), never what the input contained.
var ErrMalformed = errors.New("malformed payload")

// ErrInvalidInput is wrapped by every error [Build] returns. The message names
// the record and field at fault, never a value.
var ErrInvalidInput = errors.New("invalid input")

// malformed returns an error wrapping [ErrMalformed].
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// invalid returns an error wrapping [ErrInvalidInput].
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}

// jsonError turns an error from encoding/json into a [malformed] error that
// keeps the position but drops the message: encoding/json quotes the
// offending input ("invalid character 'x' ..."), and that input may be a
// secret.
func jsonError(what string, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return malformed("%s: invalid JSON at byte %d", what, syn.Offset)
	case errors.As(err, &typ):
		return malformed("%s: unexpected JSON type at byte %d", what, typ.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("%s: unexpected end of JSON", what)
	case errors.Is(err, ErrMalformed):
		return fmt.Errorf("%s: %w", what, err)
	default:
		return malformed("%s: invalid JSON", what)
	}
}
