package password

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
)

// Generate returns a new password satisfying r (after defaults). It fails
// with an error matching ErrInvalidRules when r cannot be satisfied, or when
// the system's random source fails.
func Generate(r Rules) (string, error) {
	return generate(r, rand.Reader)
}

func generate(r Rules, random io.Reader) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	r = r.WithDefaults()
	special := dedupe(r.SpecialChars)
	all := upperChars + lowerChars + digitChars + special

	src := &source{r: random}
	out := make([]byte, 0, r.Length)
	draw := func(set string, n int) error {
		for range n {
			i, err := src.intn(len(set))
			if err != nil {
				return err
			}
			out = append(out, set[i])
		}
		return nil
	}
	for _, class := range []struct {
		set string
		n   int
	}{{upperChars, r.Upper}, {lowerChars, r.Lower}, {digitChars, r.Digits}, {special, r.Special}, {all, r.Length - r.Upper - r.Lower - r.Digits - r.Special}} {
		if err := draw(class.set, class.n); err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
	}
	// Fisher–Yates: for i from the end, swap with a uniform j in [0, i].
	for i := len(out) - 1; i > 0; i-- {
		j, err := src.intn(i + 1)
		if err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		out[i], out[j] = out[j], out[i]
	}
	return string(out), nil
}

// source draws uniform integers from a random byte stream, reading it in
// blocks.
type source struct {
	r   io.Reader
	buf [512]byte
	n   int // unread bytes at the end of buf
}

func (s *source) uint32() (uint32, error) {
	if s.n < 4 {
		if _, err := io.ReadFull(s.r, s.buf[:]); err != nil {
			return 0, fmt.Errorf("read random source: %w", err)
		}
		s.n = len(s.buf)
	}
	v := binary.LittleEndian.Uint32(s.buf[len(s.buf)-s.n:])
	clear(s.buf[len(s.buf)-s.n : len(s.buf)-s.n+4])
	s.n -= 4
	return v, nil
}

// intn returns a uniform integer in [0, n) for 0 < n <= 1<<31. Values at or
// above the largest multiple of n that fits in 32 bits are rejected and
// redrawn, so every result is equally likely (no modulo bias).
func (s *source) intn(n int) (int, error) {
	if n <= 0 || n > 1<<31 {
		panic("password: intn argument out of range")
	}
	bound := uint64(n)
	limit := (1 << 32) - (1<<32)%bound // a multiple of n
	for {
		v, err := s.uint32()
		if err != nil {
			return 0, err
		}
		if uint64(v) < limit {
			return int(uint64(v) % bound), nil
		}
	}
}
