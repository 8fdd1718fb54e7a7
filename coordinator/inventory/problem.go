package inventory

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidInventory matches (with errors.Is) every *ValidationError.
var ErrInvalidInventory = errors.New("invalid inventory")

// Problem is one thing wrong with an inventory.
type Problem struct {
	// Path of the bad value, e.g. "records[3].rotation.resource"; "" for a
	// problem with the file as a whole (such as malformed YAML).
	Path string
	// Message says what is wrong. It never contains a field value.
	Message string
	// Line in the file, when known (0 otherwise).
	Line int
}

func (p Problem) String() string {
	s := p.Message
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Line > 0 {
		s += " (line " + strconv.Itoa(p.Line) + ")"
	}
	return s
}

// ValidationError lists every problem of an inventory that was refused.
type ValidationError struct {
	// Problems sorted by record index, then path.
	Problems []Problem
}

// Error prints one problem per line as "path: message (line N)".
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalidInventory.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidInventory }

// HasPath reports whether some problem is at path.
func (e *ValidationError) HasPath(path string) bool {
	return slices.ContainsFunc(e.Problems, func(p Problem) bool { return p.Path == path })
}

// sortProblems orders problems by record index (file-level problems first),
// then by path with indexes compared as numbers, keeping the order in which
// problems were found for equal paths.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := cmp.Compare(recordIndex(a.Path), recordIndex(b.Path)); c != 0 {
			return c
		}
		return comparePaths(a.Path, b.Path)
	})
}

// recordIndex returns N for a path starting with "records[N]", else -1.
func recordIndex(path string) int {
	rest, ok := strings.CutPrefix(path, "records[")
	if !ok {
		return -1
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return -1
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// comparePaths compares paths piece by piece, runs of digits as numbers, so
// that scripts[2] comes before scripts[10].
func comparePaths(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := splitDigits(a)
			nb, rb := splitDigits(b)
			if c := cmp.Compare(len(strings.TrimLeft(na, "0")), len(strings.TrimLeft(nb, "0"))); c != 0 {
				return c
			}
			if c := strings.Compare(strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func splitDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// problems collects problems while an inventory is decoded and checked.
type problems struct {
	list []Problem
}

func (ps *problems) addf(path string, line int, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...), Line: line})
}

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	sortProblems(ps.list)
	return &ValidationError{Problems: ps.list}
}
