package executor

import (
	"fmt"
	"sync"
	"unicode/utf8"
)

// Output captures one output stream of a script within a fixed memory bound:
// it keeps the first limit/2 bytes and the last limit-limit/2 bytes, and
// counts the rest. Writes never fail, so a script is never stopped by a full
// or failing capture. An Output is safe for concurrent use.
type Output struct {
	mu      sync.Mutex
	headCap int    // how many first bytes are kept
	tailCap int    // how many last bytes are kept
	head    []byte // first bytes, up to headCap
	tail    []byte // ring buffer of the last bytes once head is full, up to tailCap
	tailPos int    // next write position in tail once the ring is full
	total   int64
}

// NewOutput returns an Output keeping at most limit bytes (limit <= 0 means
// [DefaultOutputLimit]).
func NewOutput(limit int) *Output {
	if limit <= 0 {
		limit = DefaultOutputLimit
	}
	// The buffers grow as output comes, so that a script printing a few
	// lines does not cost a limit's worth of memory.
	return &Output{headCap: limit / 2, tailCap: limit - limit/2}
}

// Write keeps what fits of p and always reports it all written.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(p)
	o.total += int64(n)
	if room := o.headCap - len(o.head); room > 0 {
		k := min(room, len(p))
		o.head = append(o.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 || o.tailCap == 0 {
		return n, nil
	}
	if room := o.tailCap - len(o.tail); room > 0 { // ring not yet full
		k := min(room, len(p))
		o.tail = append(o.tail, p[:k]...)
		p = p[k:]
	}
	if len(p) >= len(o.tail) { // p alone fills the ring
		copy(o.tail, p[len(p)-len(o.tail):])
		o.tailPos = 0
		return n, nil
	}
	for len(p) > 0 {
		k := copy(o.tail[o.tailPos:], p)
		p = p[k:]
		o.tailPos = (o.tailPos + k) % len(o.tail)
	}
	return n, nil
}

// Total is the number of bytes written so far, kept or not.
func (o *Output) Total() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}

// Finish returns the captured text masked by m (which may be nil) and whether
// bytes were dropped. When they were, the text is the head, a marker line
// "\n[postrotate: N bytes omitted]\n", then the tail; the cut is moved off
// any split UTF-8 sequence and masked with [Masker.MaskCut], so a secret
// straddling it leaks no fragment.
func (o *Output) Finish(m *Masker) (text string, truncated bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	tail := make([]byte, 0, len(o.tail))
	tail = append(tail, o.tail[o.tailPos:]...)
	tail = append(tail, o.tail[:o.tailPos]...)
	if o.total <= int64(len(o.head)+len(o.tail)) {
		return m.Mask(string(o.head) + string(tail)), false
	}
	head := o.head[:runeCut(o.head)]
	for i := 0; i < utf8.UTFMax-1 && i < len(tail) && !utf8.RuneStart(tail[0]); i++ {
		tail = tail[1:]
	}
	omitted := o.total - int64(len(head)) - int64(len(tail))
	h, t := m.MaskCut(string(head), string(tail))
	return h + fmt.Sprintf("\n[postrotate: %d bytes omitted]\n", omitted) + t, true
}

// runeCut returns the length of b without a trailing incomplete UTF-8
// sequence.
func runeCut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
