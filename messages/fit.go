package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrResultTooLarge is wrapped by the error of [EncodeResultWithin] when a
// result does not fit its limit even with empty outputs.
var ErrResultTooLarge = errors.New("result too large")

// Marker text between the head and the tail of a shortened output, the same
// as the executors' output caps write (executor.Output).
const (
	omittedHead = "\n[postrotate: "
	omittedTail = " bytes omitted]\n"
)

// EncodeResultWithin returns rr encoded as JSON in at most limit bytes, for
// a transport that bounds a message's size (NATS' max_payload).
//
// A result that fits is encoded as [json.Marshal] does. A larger one has its
// Stdout and Stderr shortened the way the executors cap output: the head and
// the tail are kept around a line "\n[postrotate: N bytes omitted]\n", and
// StdoutTruncated or StderrTruncated is set. Every other field is kept
// whole. The room the other fields leave is shared evenly between the two
// outputs, a short one giving what it does not use to the other. Sizes are
// counted as encoded: a control or HTML-sensitive character takes 6 bytes
// (\u003c), an invalid UTF-8 byte too (it becomes \ufffd). A cut falls
// between whole UTF-8 sequences. An output an executor already capped is cut
// around its marker, which then counts the bytes both cuts omitted.
//
// The error wraps [ErrResultTooLarge] when the result does not fit even with
// empty outputs.
func EncodeResultWithin(rr RotationResult, limit int) ([]byte, error) {
	data, err := json.Marshal(rr)
	if err != nil {
		return nil, fmt.Errorf("encode rotation result: %w", err)
	}
	if len(data) <= limit {
		return data, nil
	}
	bare := rr
	bare.Stdout, bare.StdoutTruncated = "", rr.StdoutTruncated || rr.Stdout != ""
	bare.Stderr, bare.StderrTruncated = "", rr.StderrTruncated || rr.Stderr != ""
	least, err := json.Marshal(bare)
	if err != nil {
		return nil, fmt.Errorf("encode rotation result: %w", err)
	}
	if len(least) > limit {
		return nil, fmt.Errorf("encode rotation result within %d bytes: %w: %d bytes with empty outputs", limit, ErrResultTooLarge, len(least))
	}
	// An output kept whole may keep "false" where bare says "true": one
	// byte more each.
	room := limit - len(least) - 2
	outLen, errLen := encodedLen(rr.Stdout), encodedLen(rr.Stderr)
	// The sizes counted are json.Marshal's; should one differ, the next
	// round gives the outputs less room.
	for room >= 0 {
		outRoom, errRoom := share(outLen, errLen, room)
		fit := rr
		fit.Stdout, fit.StdoutTruncated = shorten(rr.Stdout, outLen, rr.StdoutTruncated, outRoom)
		fit.Stderr, fit.StderrTruncated = shorten(rr.Stderr, errLen, rr.StderrTruncated, errRoom)
		if data, err = json.Marshal(fit); err != nil {
			return nil, fmt.Errorf("encode rotation result: %w", err)
		}
		if len(data) <= limit {
			return data, nil
		}
		room -= max(len(data)-limit, 16)
	}
	return least, nil
}

// share splits room between two outputs of encoded sizes a and b: evenly,
// a smaller one leaving what it does not need to the other.
func share(a, b, room int) (int, int) {
	half := room / 2
	switch {
	case a+b <= room:
		return a, b
	case a <= half:
		return a, room - a
	case b <= room-half:
		return room - b, b
	}
	return half, room - half
}

// shorten returns s, of encoded size n, within room encoded bytes, and
// whether it is truncated (wasCut: it already was). Cut, it is its head,
// the marker, and its tail.
func shorten(s string, n int, wasCut bool, room int) (string, bool) {
	if n <= room {
		return s, wasCut
	}
	// An earlier cut's marker, merged with this one when they meet.
	ms, me, prev := -1, -1, int64(0)
	if wasCut {
		ms, me, prev = findOmitted(s)
	}
	mark := encodedLen(omitted(int64(len(s)) + prev)) // the longest marker this cut can write
	if room < mark {
		return "", true
	}
	keep := room - mark
	h, used := 0, 0
	for h < len(s) {
		c, size := runeAt(s[h:])
		if used+c > keep/2 {
			break
		}
		used, h = used+c, h+size
	}
	t := len(s)
	for t > h {
		c, size := runeBefore(s[h:t])
		if used+c > keep {
			break
		}
		used, t = used+c, t-size
	}
	cut := int64(t - h)
	if ms >= 0 && ms < t && me > h {
		h, t = min(h, ms), max(t, me)
		cut = prev + int64(t-h) - int64(me-ms)
	}
	return s[:h] + omitted(cut) + s[t:], true
}

// omitted returns the marker of n omitted bytes.
func omitted(n int64) string {
	return omittedHead + strconv.FormatInt(n, 10) + omittedTail
}

// findOmitted returns where s holds a marker and the count it says, or
// -1, -1, 0 when it holds none or more than one.
func findOmitted(s string) (start, end int, n int64) {
	start, end = -1, -1
	for i := 0; ; {
		k := strings.Index(s[i:], omittedHead)
		if k < 0 {
			return start, end, n
		}
		k += i
		i = k + len(omittedHead)
		j := i
		for j < len(s) && j-i < 19 && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		v, err := strconv.ParseInt(s[i:j], 10, 64)
		if err != nil || !strings.HasPrefix(s[j:], omittedTail) {
			continue
		}
		if start >= 0 {
			return -1, -1, 0
		}
		start, end, n = k, j+len(omittedTail), v
	}
}

// asciiLen is the encoded size of each ASCII character in a JSON string,
// as json.Marshal writes it.
var asciiLen = func() (t [utf8.RuneSelf]int) {
	for c := range t {
		b, err := json.Marshal(string(rune(c)))
		if err != nil {
			panic(err)
		}
		t[c] = len(b) - len(`""`)
	}
	return t
}()

// encodedLen is the size of s encoded as a JSON string, quotes left out.
func encodedLen(s string) int {
	n := 0
	for len(s) > 0 {
		c, size := runeAt(s)
		n, s = n+c, s[size:]
	}
	return n
}

// runeAt returns the encoded size of the first character of s and its
// length in s.
func runeAt(s string) (int, int) {
	if s[0] < utf8.RuneSelf {
		return asciiLen[s[0]], 1
	}
	r, size := utf8.DecodeRuneInString(s)
	return runeLen(r, size), size
}

// runeBefore is runeAt for the last character of s.
func runeBefore(s string) (int, int) {
	if c := s[len(s)-1]; c < utf8.RuneSelf {
		return asciiLen[c], 1
	}
	r, size := utf8.DecodeLastRuneInString(s)
	return runeLen(r, size), size
}

func runeLen(r rune, size int) int {
	switch {
	case r == utf8.RuneError && size == 1: // written \ufffd
		return 6
	case r == '\u2028', r == '\u2029': // written \u2028, \u2029
		return 6
	}
	return size
}

// ResultHeaderRoom is what ResultLimit leaves of a server's max_payload for
// a result message's headers beyond its message id, and the protocol.
const ResultHeaderRoom = 1 << 10

// ResultLimit is how large the encoded result published with message id
// msgID (ResultMsgID) may be on a connection whose server takes messages of
// at most maxPayload bytes, headers included: the limit to give
// EncodeResultWithin.
func ResultLimit(maxPayload int64, msgID string) int {
	hdr := len("NATS/1.0\r\nNats-Msg-Id: \r\n\r\n")
	return int(maxPayload) - ResultHeaderRoom - hdr - len(msgID)
}
