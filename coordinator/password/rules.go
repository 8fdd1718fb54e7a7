package password

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

const (
	// DefaultLength is the length used when Rules.Length is zero.
	DefaultLength = 32
	// MaxLength is the longest password Generate produces.
	MaxLength = 1024
	// DefaultSpecialChars is the special character set used when
	// Rules.SpecialChars is empty: punctuation that is accepted by common
	// password policies (Active Directory, databases, cloud IAM) and needs no
	// quoting in most configuration formats. Quotes, backslash, backtick,
	// '|', ';', '~', ',', '.', ':' and '/' are left out because they often
	// break shell, SQL, connection-string or CSV handling in scripts.
	DefaultSpecialChars = "!@#$%^&*()-_=+[]{}<>?"
)

const (
	upperChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	lowerChars = "abcdefghijklmnopqrstuvwxyz"
	digitChars = "0123456789"
)

// ErrInvalidRules matches (with errors.Is) every error returned by
// Rules.Validate and by Generate for rules that cannot be satisfied.
var ErrInvalidRules = errors.New("invalid password rules")

// RuleError is one problem with a rule set. Rule is the name of the rule as
// written in an inventory (length, upper, lower, digits, special,
// special_chars).
type RuleError struct {
	Rule   string
	Reason string
}

func (e *RuleError) Error() string { return e.Rule + ": " + e.Reason }

// Unwrap returns ErrInvalidRules.
func (e *RuleError) Unwrap() error { return ErrInvalidRules }

// Rules is a password complexity: a length and the minimum number of
// characters of each class.
type Rules struct {
	// Length of the password. Defaults to DefaultLength (32); at most MaxLength.
	Length int `yaml:"length" json:"length"`
	// Upper is the minimum number of uppercase ASCII letters.
	Upper int `yaml:"upper" json:"upper"`
	// Lower is the minimum number of lowercase ASCII letters.
	Lower int `yaml:"lower" json:"lower"`
	// Digits is the minimum number of ASCII digits.
	Digits int `yaml:"digits" json:"digits"`
	// Special is the minimum number of characters from SpecialChars.
	Special int `yaml:"special" json:"special"`
	// SpecialChars is the set of special characters: printable ASCII
	// punctuation only. Defaults to DefaultSpecialChars.
	SpecialChars string `yaml:"special_chars" json:"special_chars"`
}

// WithDefaults returns r with zero fields replaced by their defaults.
func (r Rules) WithDefaults() Rules {
	if r.Length == 0 {
		r.Length = DefaultLength
	}
	if r.SpecialChars == "" {
		r.SpecialChars = DefaultSpecialChars
	}
	return r
}

// Validate reports whether a password can be generated from r once defaults
// are applied. The returned error joins one *RuleError per problem; each
// matches ErrInvalidRules.
func (r Rules) Validate() error {
	r = r.WithDefaults()
	var errs []error
	add := func(rule, format string, args ...any) {
		errs = append(errs, &RuleError{Rule: rule, Reason: fmt.Sprintf(format, args...)})
	}
	switch {
	case r.Length < 0:
		add("length", "must not be negative (got %d)", r.Length)
	case r.Length > MaxLength:
		add("length", "must be at most %d (got %d)", MaxLength, r.Length)
	}
	minimums := []struct {
		rule string
		n    int
	}{{"upper", r.Upper}, {"lower", r.Lower}, {"digits", r.Digits}, {"special", r.Special}}
	sum := 0 // of the minimums that are in range
	for _, m := range minimums {
		switch {
		case m.n < 0:
			add(m.rule, "must not be negative (got %d)", m.n)
		case m.n > MaxLength:
			add(m.rule, "must be at most %d (got %d)", MaxLength, m.n)
		default:
			sum += m.n
		}
	}
	if r.Length >= 0 && r.Length <= MaxLength && sum > r.Length {
		add("length", "the minimums upper+lower+digits+special add up to %d, more than the length %d", sum, r.Length)
	}
	if err := checkSpecialChars(r.SpecialChars); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkSpecialChars refuses a special character set that contains anything
// but printable ASCII punctuation and symbols.
func checkSpecialChars(s string) error {
	for i, c := range s {
		var what string
		switch {
		case c == unicode.ReplacementChar && !strings.HasPrefix(s[i:], string(unicode.ReplacementChar)):
			what = "invalid UTF-8"
		case c > unicode.MaxASCII:
			what = fmt.Sprintf("non-ASCII character %q", c)
		case unicode.IsSpace(c):
			what = fmt.Sprintf("whitespace %q", c)
		case unicode.IsControl(c):
			what = fmt.Sprintf("control character %q", c)
		case unicode.IsLetter(c):
			what = fmt.Sprintf("letter %q", c)
		case unicode.IsDigit(c):
			what = fmt.Sprintf("digit %q", c)
		default:
			continue
		}
		return &RuleError{Rule: "special_chars", Reason: fmt.Sprintf("must hold only ASCII punctuation and symbols, found %s at byte %d", what, i)}
	}
	return nil
}

// dedupe returns the distinct bytes of s in first-seen order, so that a
// character repeated in a set is not drawn more often than the others.
func dedupe(s string) string {
	var seen [256]bool
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]] = true
			b = append(b, s[i])
		}
	}
	return string(b)
}
