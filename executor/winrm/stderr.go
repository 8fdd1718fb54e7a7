package winrm

import (
	"bytes"
	"io"
	"strings"
)

// Limits of what stderrFilter holds back.
const (
	maxHeldLine = 4 << 10 // the start of a line that may be a status line
	maxCLIXML   = 8 << 20 // a CLIXML block
)

var (
	clixmlHeader = []byte("#< CLIXML")
	objsStart    = []byte("<Objs")
	objsEnd      = []byte("</Objs>")
	utf8BOM      = []byte("\xef\xbb\xbf")
)

// stderrFilter passes the remote command's stderr on to out, minus what is
// not the script's:
//
//   - the status lines of the remote program ("<marker> ready",
//     "<marker> failed <reason>"), which it records; the marker is random,
//     so a script cannot forge one;
//   - PowerShell's CLIXML serialization of its streams: a "#< CLIXML" line
//     then <Objs> blocks, whose progress records are dropped and whose
//     error, warning, verbose, debug and information records are decoded
//     into plain text lines (see decodeCLIXML).
//
// Everything else passes through as it comes: only the start of a line
// that may still turn out to be one of these is held back, up to its end.
// A stderrFilter is not safe for concurrent use.
type stderrFilter struct {
	out    io.Writer
	marker []byte // the marker and a space

	line    []byte // the start of the current line, held back
	mid     bool   // passing the rest of a line through
	clixml  bool   // a "#< CLIXML" line was seen
	objs    []byte // a CLIXML block being collected, nil outside one
	seen    int    // how much of objs was searched for its end
	skipEOL bool   // drop the line ending right after a CLIXML block
	heldCR  bool   // a "\r" that may start that line ending, held back

	ready   bool
	failed  bool
	failure string
}

func newStderrFilter(marker string, out io.Writer) *stderrFilter {
	return &stderrFilter{out: out, marker: []byte(marker + " ")}
}

// Ready reports whether the remote program said it starts the script.
func (f *stderrFilter) Ready() bool { return f.ready }

// Failure reports whether the remote program said it could not start the
// script, and why.
func (f *stderrFilter) Failure() (bool, string) { return f.failed, f.failure }

// Write passes p on, minus the lines described on stderrFilter. It never
// fails.
func (f *stderrFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if f.skipEOL {
			f.skipEOL = false
			switch {
			case f.heldCR && p[0] == '\n':
				f.heldCR = false
				p = p[1:]
				continue
			case f.heldCR:
				f.heldCR = false
				p = append([]byte{'\r'}, p...) // not a line ending after all
			case bytes.HasPrefix(p, []byte("\r\n")):
				p = p[2:]
				continue
			case p[0] == '\n':
				p = p[1:]
				continue
			case len(p) == 1 && p[0] == '\r': // maybe a \r\n cut between writes
				f.skipEOL, f.heldCR = true, true
				return n, nil
			}
		}
		switch {
		case f.objs != nil:
			p = f.collectCLIXML(p)
		case f.mid:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				f.pass(p)
				return n, nil
			}
			f.pass(p[:i+1])
			p = p[i+1:]
			f.mid = false
		default:
			i := bytes.IndexByte(p, '\n')
			chunk := p
			if i >= 0 {
				chunk = p[:i+1]
			}
			f.line = append(f.line, chunk...)
			p = p[len(chunk):]
			if i >= 0 {
				f.endLine()
				continue
			}
			f.partialLine()
		}
	}
	return n, nil
}

// Flush passes on what is held back: a partial line, an unterminated
// CLIXML block (decoded if it parses).
func (f *stderrFilter) Flush() {
	f.skipEOL, f.heldCR = false, false // a "\r" right after a block ends it
	if f.objs != nil {
		f.emitCLIXML(f.objs)
		f.objs = nil
	}
	if len(f.line) > 0 {
		f.pass(f.line)
		f.line = f.line[:0]
	}
}

func (f *stderrFilter) pass(p []byte) { _, _ = f.out.Write(p) }

// partialLine decides what to do with the start of a line that has no end
// yet: keep holding it while it may be special, else pass it through.
func (f *stderrFilter) partialLine() {
	text := bytes.TrimPrefix(f.line, utf8BOM)
	switch {
	case f.clixml && bytes.HasPrefix(text, objsStart):
		f.objs, f.seen, f.line = append([]byte(nil), text...), 0, f.line[:0]
		if rest := f.collectCLIXML(nil); len(rest) > 0 {
			_, _ = f.Write(rest)
		}
	case len(f.line) <= maxHeldLine && f.maySpecial(text):
		// Hold on.
	default:
		f.pass(f.line)
		f.line = f.line[:0]
		f.mid = true
	}
}

// maySpecial reports whether a line starting with b may be a status line or
// CLIXML.
func (f *stderrFilter) maySpecial(b []byte) bool {
	if len(b) < len(utf8BOM) && bytes.HasPrefix(utf8BOM, b) {
		return true // maybe a byte order mark, then a status line
	}
	return prefixEither(b, f.marker) || prefixEither(b, clixmlHeader) || (f.clixml && prefixEither(b, objsStart))
}

// prefixEither reports whether one of a and b is a prefix of the other.
func prefixEither(a, b []byte) bool {
	if len(a) < len(b) {
		return bytes.HasPrefix(b, a)
	}
	return bytes.HasPrefix(a, b)
}

// endLine handles a complete line, ending with "\n".
func (f *stderrFilter) endLine() {
	line := f.line
	f.line = f.line[:0]
	text := bytes.TrimPrefix(line, utf8BOM)
	text = bytes.TrimSuffix(bytes.TrimSuffix(text, []byte("\n")), []byte("\r"))
	switch {
	case bytes.HasPrefix(text, f.marker):
		status := string(text[len(f.marker):])
		switch {
		case status == "ready":
			f.ready = true
		case strings.HasPrefix(status, "failed"):
			if !f.failed {
				f.failed, f.failure = true, strings.TrimSpace(strings.TrimPrefix(status, "failed"))
			}
		}
	case bytes.Equal(text, clixmlHeader):
		f.clixml = true
	case f.clixml && bytes.HasPrefix(text, objsStart):
		f.objs, f.seen = append([]byte(nil), bytes.TrimPrefix(line, utf8BOM)...), 0
		if rest := f.collectCLIXML(nil); len(rest) > 0 {
			_, _ = f.Write(rest)
		}
	default:
		f.pass(line)
	}
}

// collectCLIXML adds p to the block being collected; once the block is
// complete it emits it and returns what follows it, to be filtered as new
// lines.
func (f *stderrFilter) collectCLIXML(p []byte) []byte {
	from := max(0, f.seen-len(objsEnd)+1)
	f.objs = append(f.objs, p...)
	f.seen = len(f.objs)
	i := bytes.Index(f.objs[from:], objsEnd)
	if i < 0 {
		if len(f.objs) > maxCLIXML { // not CLIXML after all, or too much of it
			f.pass(f.objs)
			f.objs = nil
			f.mid = true
		}
		return nil
	}
	end := from + i + len(objsEnd)
	block, rest := f.objs[:end], append([]byte(nil), f.objs[end:]...)
	f.emitCLIXML(block)
	f.objs = nil
	switch {
	case bytes.HasPrefix(rest, []byte("\r\n")):
		rest = rest[2:]
	case bytes.HasPrefix(rest, []byte("\n")):
		rest = rest[1:]
	case len(rest) == 0:
		f.skipEOL = true
	case bytes.Equal(rest, []byte("\r")): // maybe a \r\n cut between writes
		rest = nil
		f.skipEOL, f.heldCR = true, true
	}
	return rest
}

// emitCLIXML passes on the text of a CLIXML block, or the block itself
// when it does not parse.
func (f *stderrFilter) emitCLIXML(block []byte) {
	text, ok := decodeCLIXML(block)
	if !ok {
		f.pass(block)
		return
	}
	f.pass([]byte(text))
}
