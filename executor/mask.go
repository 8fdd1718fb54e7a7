package executor

import (
	"cmp"
	"slices"
	"strings"

	"github.com/postrotate/postrotate/payload"
)

// Mask is what every secret is replaced by.
const Mask = "********"

// Masker replaces secrets in text by [Mask]. A nil or empty Masker leaves
// text unchanged. A Masker is safe for concurrent use.
//
// Masking takes one pass over the text, however many variants there are:
// the 4 bytes at each position are looked up in a bit set of the variants'
// first 4 bytes, and only on a hit in a map of the variants starting with
// them. Variants shorter than 4 bytes are searched for one by one.
type Masker struct {
	variants []string            // longest first
	short    []string            // variants shorter than anchorLen, longest first
	anchored map[uint32][]string // the others by their first anchorLen bytes, longest first
	filter   *anchorFilter       // the hashes of anchored's keys; nil when it is empty
}

// anchorLen is the length of the prefix by which a Masker finds where a
// variant may start.
const anchorLen = 4

// anchorFilter has one bit per hash of an anchor: 2^anchorBits bits.
type anchorFilter [1 << anchorBits / 64]uint64

const anchorBits = 16

// anchorHash returns the bit of a in an anchorFilter.
func anchorHash(a uint32) uint32 { return (a * 0x9e3779b1) >> (32 - anchorBits) }

// anchorAt returns the anchorLen bytes of s at i as a number; i+3 < len(s).
func anchorAt(s string, i int) uint32 {
	_ = s[i+3]
	return uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
}

// NewMasker returns a masker for the secrets and every form
// [payload.SecretVariants] derives from them (base64, JSON-, URL- and
// HTML-escaped, hex, upper- and lower-cased...). Empty secrets are ignored.
func NewMasker(secrets ...string) *Masker {
	m := &Masker{variants: payload.SecretVariants(secrets...)}
	for _, v := range m.variants {
		if len(v) < anchorLen {
			m.short = append(m.short, v)
			continue
		}
		if m.anchored == nil {
			m.anchored = make(map[uint32][]string)
			m.filter = new(anchorFilter)
		}
		a := anchorAt(v, 0)
		m.anchored[a] = append(m.anchored[a], v)
		h := anchorHash(a)
		m.filter[h/64] |= 1 << (h % 64)
	}
	return m
}

// Mask returns s with every occurrence of every variant replaced by [Mask].
// Overlapping or adjacent occurrences become a single [Mask], so no byte of
// any occurrence survives, whichever variant it belongs to.
func (m *Masker) Mask(s string) string {
	if m == nil || len(m.variants) == 0 || s == "" {
		return s
	}
	spans := m.shortSpans(s, m.anchoredSpans(s)) // the occurrences, by start
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	prev := 0
	for _, sp := range spans {
		b.WriteString(s[prev:sp.start])
		b.WriteString(Mask)
		prev = sp.end
	}
	b.WriteString(s[prev:])
	return b.String()
}

// anchoredSpans returns the occurrences in s of the variants of anchorLen
// bytes or more, by start, merged.
func (m *Masker) anchoredSpans(s string) []span {
	f := m.filter
	if f == nil {
		return nil
	}
	var spans []span
	for i := 0; i+anchorLen <= len(s); i++ {
		a := anchorAt(s, i)
		if h := anchorHash(a); f[h/64]&(1<<(h%64)) == 0 {
			continue
		}
		for _, v := range m.anchored[a] { // longest first: the first found covers the others
			if strings.HasPrefix(s[i:], v) {
				spans = addSpan(spans, i, i+len(v))
				break
			}
		}
	}
	return spans
}

// shortSpans adds to spans the occurrences in s of the variants shorter
// than anchorLen, and returns them all by start, merged.
func (m *Masker) shortSpans(s string, spans []span) []span {
	sorted := len(spans)
	for _, v := range m.short {
		for i := 0; i+len(v) <= len(s); {
			j := strings.Index(s[i:], v)
			if j < 0 {
				break
			}
			spans = append(spans, span{i + j, i + j + len(v)})
			i += j + 1 // occurrences may overlap
		}
	}
	if len(spans) == sorted {
		return spans
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	merged := spans[:0]
	for _, sp := range spans {
		merged = addSpan(merged, sp.start, sp.end)
	}
	return merged
}

// span is the bytes [start, end) of a text.
type span struct{ start, end int }

// addSpan adds [start, end) to spans, which are sorted, disjoint and not
// adjacent, and end before start or overlap it: merged with the last span
// when they overlap or touch.
func addSpan(spans []span, start, end int) []span {
	if n := len(spans); n > 0 && start <= spans[n-1].end {
		spans[n-1].end = max(spans[n-1].end, end)
		return spans
	}
	return append(spans, span{start, end})
}

// MaskCut masks the two sides of a cut in a stream: head is what came before
// the cut, tail what came after, and the bytes between are gone. Besides
// masking each side, a fragment that may be the start of a secret at the end
// of head, or the end of a secret at the start of tail, is replaced by [Mask]
// too, so a secret straddling the cut leaks no part of itself.
func (m *Masker) MaskCut(head, tail string) (string, string) {
	head, tail = m.Mask(head), m.Mask(tail)
	if m == nil {
		return head, tail
	}
	cutHead, cutTail := 0, 0
	for _, v := range m.variants {
		// Longest proper prefix of v that ends head.
		for k := min(len(v)-1, len(head)); k > cutHead; k-- {
			if strings.HasSuffix(head, v[:k]) {
				cutHead = k
				break
			}
		}
		// Longest proper suffix of v that starts tail.
		for k := min(len(v)-1, len(tail)); k > cutTail; k-- {
			if strings.HasPrefix(tail, v[len(v)-k:]) {
				cutTail = k
				break
			}
		}
	}
	if cutHead > 0 && !strings.HasSuffix(head[:len(head)-cutHead], Mask) {
		head = head[:len(head)-cutHead] + Mask
	} else if cutHead > 0 {
		head = head[:len(head)-cutHead]
	}
	if cutTail > 0 && !strings.HasPrefix(tail[cutTail:], Mask) {
		tail = Mask + tail[cutTail:]
	} else if cutTail > 0 {
		tail = tail[cutTail:]
	}
	return head, tail
}

// MaskError returns err with its message masked. errors.Is and errors.As
// still see err: only the text changes.
func (m *Masker) MaskError(err error) error {
	if err == nil {
		return nil
	}
	msg := m.Mask(err.Error())
	if msg == err.Error() {
		return err
	}
	return &maskedError{msg: msg, err: err}
}

// maskedError is an error whose message had secrets masked.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }
