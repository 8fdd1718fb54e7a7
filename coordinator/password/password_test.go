package password

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"testing/iotest"
)

func count(s, set string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(set, s[i]) >= 0 {
			n++
		}
	}
	return n
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	got := Rules{}.WithDefaults()
	if got.Length != DefaultLength || got.SpecialChars != DefaultSpecialChars {
		t.Fatalf("defaults not applied: %+v", got)
	}
	custom := Rules{Length: 12, SpecialChars: "!"}.WithDefaults()
	if custom.Length != 12 || custom.SpecialChars != "!" {
		t.Fatalf("explicit values overwritten: %+v", custom)
	}
	if err := checkSpecialChars(DefaultSpecialChars); err != nil {
		t.Fatalf("default special chars invalid: %v", err)
	}
}

func TestGenerateHonoursMinimums(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rules Rules
	}{
		{"defaults", Rules{}},
		{"keeper example", Rules{Length: 32, Upper: 2, Lower: 2, Digits: 2, Special: 2, SpecialChars: "!@#$%"}},
		{"exactly the minimums", Rules{Length: 8, Upper: 2, Lower: 2, Digits: 2, Special: 2}},
		{"one class fills", Rules{Length: 10, Digits: 10}},
		{"tiny", Rules{Length: 1, Special: 1, SpecialChars: "#"}},
		{"max length", Rules{Length: MaxLength, Upper: 100, Lower: 100, Digits: 100, Special: 100}},
		{"repeated special chars", Rules{Length: 16, Special: 4, SpecialChars: "!!!!?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := tt.rules.WithDefaults()
			allowed := upperChars + lowerChars + digitChars + r.SpecialChars
			for range 300 {
				pw, err := Generate(tt.rules)
				if err != nil {
					t.Fatalf("Generate: %v", err)
				}
				if len(pw) != r.Length {
					t.Fatalf("length %d, want %d", len(pw), r.Length)
				}
				if got := count(pw, allowed); got != len(pw) {
					t.Fatalf("password has %d characters outside the allowed set", len(pw)-got)
				}
				for _, c := range []struct {
					name string
					set  string
					min  int
				}{{"upper", upperChars, r.Upper}, {"lower", lowerChars, r.Lower}, {"digits", digitChars, r.Digits}, {"special", r.SpecialChars, r.Special}} {
					if got := count(pw, c.set); got < c.min {
						t.Fatalf("%s: %d characters, want at least %d", c.name, got, c.min)
					}
				}
			}
		})
	}
}

func TestValidateRefusesImpossibleRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		rules     Rules
		wantRules []string
	}{
		{"negative length", Rules{Length: -1}, []string{"length"}},
		{"negative minimum", Rules{Upper: -2, Digits: -1}, []string{"upper", "digits"}},
		{"minimums exceed length", Rules{Length: 8, Upper: 3, Lower: 3, Digits: 3}, []string{"length"}},
		{"minimums exceed default length", Rules{Special: 33}, []string{"length"}},
		{"too long", Rules{Length: MaxLength + 1}, []string{"length"}},
		{"huge minimum", Rules{Length: 10, Lower: math.MaxInt}, []string{"lower"}},
		{"negative and too many", Rules{Length: 8, Upper: 3, Lower: 3, Digits: 3, Special: -1}, []string{"special", "length"}},
		{"letter in special chars", Rules{Special: 1, SpecialChars: "!a"}, []string{"special_chars"}},
		{"digit in special chars", Rules{SpecialChars: "!1"}, []string{"special_chars"}},
		{"space in special chars", Rules{SpecialChars: "! "}, []string{"special_chars"}},
		{"tab in special chars", Rules{SpecialChars: "\t!"}, []string{"special_chars"}},
		{"control in special chars", Rules{SpecialChars: "!\x00"}, []string{"special_chars"}},
		{"non-ASCII in special chars", Rules{SpecialChars: "!€"}, []string{"special_chars"}},
		{"invalid UTF-8 in special chars", Rules{SpecialChars: "!\xff"}, []string{"special_chars"}},
		{"several at once", Rules{Length: -5, Special: -1, SpecialChars: "ab"}, []string{"length", "special", "special_chars"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.rules.Validate()
			if !errors.Is(err, ErrInvalidRules) {
				t.Fatalf("Validate() = %v, want ErrInvalidRules", err)
			}
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("Validate() = %v, want a *RuleError", err)
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var re *RuleError
				if errors.As(e, &re) {
					got = append(got, re.Rule)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.wantRules, ",") {
				t.Fatalf("rules in error = %v, want %v (%v)", got, tt.wantRules, err)
			}
			if _, err := Generate(tt.rules); !errors.Is(err, ErrInvalidRules) {
				t.Fatalf("Generate() error = %v, want ErrInvalidRules", err)
			}
		})
	}
}

func TestValidateAcceptsGoodRules(t *testing.T) {
	t.Parallel()
	for _, r := range []Rules{{}, {Length: 1}, {Length: MaxLength}, {Length: 4, Upper: 1, Lower: 1, Digits: 1, Special: 1}, {SpecialChars: `"'\|~;:,./` + "`"}} {
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", r, err)
		}
	}
}

func TestGenerateRandomSourceFailure(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := generate(Rules{}, iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("generate() = %v, want the source error", err)
	}
}

func TestIntnRejectsBiasedValues(t *testing.T) {
	t.Parallel()
	// For n = 3, 2^32 % 3 = 1, so the single value 0xFFFFFFFF must be
	// rejected; the next value, 4, gives 4 % 3 = 1.
	var b bytes.Buffer
	b.Write([]byte{0xff, 0xff, 0xff, 0xff, 4, 0, 0, 0})
	b.Write(make([]byte, 512-8))
	s := &source{r: &b}
	got, err := s.intn(3)
	if err != nil || got != 1 {
		t.Fatalf("intn(3) = %d, %v; want 1", got, err)
	}
}

// TestGenerateDistribution checks that every allowed character comes up about
// equally often. With no minimums every position is uniform over the union;
// the chi-square statistic over k characters has k-1 degrees of freedom
// (mean k-1, standard deviation sqrt(2(k-1))). The bound is many standard
// deviations above the mean, so a correct generator essentially never fails,
// while a biased one (e.g. modulo of a byte, or a class-weighted draw) would
// far exceed it with this many samples.
func TestGenerateDistribution(t *testing.T) {
	t.Parallel()
	r := Rules{Length: MaxLength}.WithDefaults()
	allowed := upperChars + lowerChars + digitChars + r.SpecialChars
	counts := make(map[byte]int, len(allowed))
	total := 0
	for range 200 {
		pw, err := Generate(r)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(pw); i++ {
			counts[pw[i]]++
		}
		total += len(pw)
	}
	k := float64(len(allowed))
	expected := float64(total) / k
	chi2 := 0.0
	for i := 0; i < len(allowed); i++ {
		d := float64(counts[allowed[i]]) - expected
		chi2 += d * d / expected
	}
	bound := (k - 1) + 10*math.Sqrt(2*(k-1))
	if chi2 > bound {
		t.Fatalf("chi-square %.1f over %d characters exceeds %.1f", chi2, len(allowed), bound)
	}
	t.Logf("chi-square %.1f (df %.0f, bound %.1f)", chi2, k-1, bound)
}

// TestShuffleMovesMinimums checks that the guaranteed characters are not
// left where they were drawn: without the shuffle an upper+lower password of
// length 2 would always start with the uppercase letter.
func TestShuffleMovesMinimums(t *testing.T) {
	t.Parallel()
	r := Rules{Length: 2, Upper: 1, Lower: 1}
	upperFirst := 0
	const n = 2000
	for range n {
		pw, err := Generate(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.IndexByte(upperChars, pw[0]) >= 0 {
			upperFirst++
		}
	}
	// Expect about n/2; the bound is over 20 standard deviations wide.
	if upperFirst < n/4 || upperFirst > 3*n/4 {
		t.Fatalf("uppercase first in %d of %d passwords, want about half", upperFirst, n)
	}
}

func BenchmarkGenerate(b *testing.B) {
	for _, r := range []Rules{{}, {Length: 32, Upper: 2, Lower: 2, Digits: 2, Special: 2}, {Length: MaxLength}} {
		r := r.WithDefaults()
		b.Run(fmt.Sprintf("length=%d,minimums=%d", r.Length, r.Upper+r.Lower+r.Digits+r.Special), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Generate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
