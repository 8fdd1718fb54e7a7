package executor_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/postrotate/postrotate/executor"
)

// reference is what an Output of limit must produce for data, unmasked,
// when no cut falls inside a UTF-8 sequence.
func reference(data []byte, limit int) (string, bool) {
	if len(data) <= limit {
		return string(data), false
	}
	h, t := limit/2, limit-limit/2
	return fmt.Sprintf("%s\n[postrotate: %d bytes omitted]\n%s", data[:h], len(data)-h-t, data[len(data)-t:]), true
}

func write(o *executor.Output, data []byte, chunk int) {
	for len(data) > 0 {
		n := min(chunk, len(data))
		o.Write(data[:n])
		data = data[n:]
	}
}

func TestOutput(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, 9, 10, 11, 25, 1000} {
		for _, chunk := range []int{1, 3, 7, 10, 4096} {
			for _, limit := range []int{1, 2, 10, 11} {
				data := []byte(strings.Repeat("0123456789", size/10+1)[:size])
				o := executor.NewOutput(limit)
				write(o, data, chunk)
				got, truncated := o.Finish(nil)
				want, wantTruncated := reference(data, limit)
				if got != want || truncated != wantTruncated || o.Total() != int64(size) {
					t.Errorf("size %d chunk %d limit %d: got %q %v, want %q %v", size, chunk, limit, got, truncated, want, wantTruncated)
				}
			}
		}
	}
}

func TestOutputDefaultLimit(t *testing.T) {
	t.Parallel()
	o := executor.NewOutput(0)
	write(o, bytes.Repeat([]byte("x"), executor.DefaultOutputLimit), 1<<15)
	if got, truncated := o.Finish(nil); truncated || len(got) != executor.DefaultOutputLimit {
		t.Errorf("%d bytes, truncated %v", len(got), truncated)
	}
	o.Write([]byte("y"))
	if _, truncated := o.Finish(nil); !truncated {
		t.Error("one byte over the default limit is not truncated")
	}
}

func TestOutputMemoryIsBounded(t *testing.T) {
	const limit = 1 << 16
	o := executor.NewOutput(limit)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2048)
	write(o, chunk, len(chunk)) // warm up: buffers at their size
	allocs := testing.AllocsPerRun(100, func() { o.Write(chunk) })
	if allocs != 0 {
		t.Errorf("Write allocates %v times per call once full", allocs)
	}
	for range (50 << 20) / len(chunk) {
		o.Write(chunk)
	}
	if got, _ := o.Finish(nil); len(got) > limit+100 {
		t.Errorf("kept %d bytes", len(got))
	}
}

func TestOutputCutKeepsUTF8Whole(t *testing.T) {
	t.Parallel()
	data := []byte(strings.Repeat("é", 20)) // 2 bytes each: limits of odd halves split one
	for _, limit := range []int{7, 9, 11} {
		o := executor.NewOutput(limit)
		o.Write(data)
		got, _ := o.Finish(nil)
		if !utf8.ValidString(got) {
			t.Errorf("limit %d: %q is not valid UTF-8", limit, got)
		}
		var n int
		if _, err := fmt.Sscanf(got[strings.Index(got, "[postrotate:"):], "[postrotate: %d bytes omitted]", &n); err != nil {
			t.Fatal(err)
		}
		kept := strings.Count(got, "é") * 2
		if kept+n != len(data) {
			t.Errorf("limit %d: %d kept + %d omitted != %d", limit, kept, n, len(data))
		}
	}
}

func TestOutputSecretAcrossCut(t *testing.T) {
	t.Parallel()
	const secret = "S3CR3T-VALUE-ABCDEFGHIJ"
	m := executor.NewMasker(secret)
	// Every position of the secret around the cut, plus an omitted middle.
	for off := range len(secret) + 2 {
		const limit = 64
		data := strings.Repeat(".", limit/2-off) + secret + strings.Repeat("-", 100) + secret + strings.Repeat("+", 20)
		o := executor.NewOutput(limit)
		o.Write([]byte(data))
		got, truncated := o.Finish(m)
		if !truncated {
			t.Fatal("not truncated")
		}
		for i := 3; i <= len(secret); i++ { // no fragment of 3 bytes or more
			for j := 0; j+i <= len(secret); j++ {
				if strings.Contains(got, secret[j:j+i]) {
					t.Fatalf("offset %d: %q leaks %q", off, got, secret[j:j+i])
				}
			}
		}
	}
}

func FuzzOutput(f *testing.F) {
	f.Add([]byte("hello world, this is output"), 8, 3)
	f.Fuzz(func(t *testing.T, data []byte, limit, chunk int) {
		if limit <= 0 || limit > 1<<12 || chunk <= 0 || bytes.ContainsFunc(data, func(r rune) bool { return r >= 0x80 || r == utf8.RuneError }) {
			t.Skip() // ASCII only: the UTF-8 cut has its own test
		}
		o := executor.NewOutput(limit)
		write(o, data, chunk)
		got, truncated := o.Finish(nil)
		want, wantTruncated := reference(data, limit)
		if got != want || truncated != wantTruncated {
			t.Errorf("got %q %v, want %q %v", got, truncated, want, wantTruncated)
		}
	})
}
