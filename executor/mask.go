package executor

import (
	"strings"

	"github.com/postrotate/postrotate/payload"
)

// Mask is what every secret is replaced by.
const Mask = "********"

// Masker replaces secrets in text by [Mask]. A nil or empty Masker leaves
// text unchanged. A Masker is safe for concurrent use.
type Masker struct {
	variants []string // longest first
}

// NewMasker returns a masker for the secrets and every form
// [payload.SecretVariants] derives from them (base64, URL-encoded,
// JSON-escaped...). Empty secrets are ignored.
func NewMasker(secrets ...string) *Masker {
	return &Masker{variants: payload.SecretVariants(secrets...)}
}

// Mask returns s with every occurrence of every variant replaced by [Mask].
// Overlapping or adjacent occurrences become a single [Mask], so no byte of
// any occurrence survives, whichever variant it belongs to.
func (m *Masker) Mask(s string) string {
	if m == nil || len(m.variants) == 0 || s == "" {
		return s
	}
	var hidden []bool // lazily allocated: most output holds no secret
	for _, v := range m.variants {
		end := 0 // bytes before end are already marked for this variant
		for i := 0; i+len(v) <= len(s); {
			j := strings.Index(s[i:], v)
			if j < 0 {
				break
			}
			start := i + j
			if hidden == nil {
				hidden = make([]bool, len(s))
			}
			for k := max(start, end); k < start+len(v); k++ {
				hidden[k] = true
			}
			end = start + len(v)
			i = start + 1 // occurrences may overlap
		}
	}
	if hidden == nil {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !hidden[i] {
			j := i
			for j < len(s) && !hidden[j] {
				j++
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		for i < len(s) && hidden[i] {
			i++
		}
		b.WriteString(Mask)
	}
	return b.String()
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
