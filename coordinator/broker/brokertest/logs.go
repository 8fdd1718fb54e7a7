package brokertest

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"
)

// Logs collects the JSON lines of a zerolog logger (a worker's, whose NATS
// connection reports permission violations through natsconn.ErrorHandler)
// for a test that waits for one.
type Logs struct {
	mu    sync.Mutex
	lines []map[string]any
	added chan struct{} // signalled at every line
}

// NewLogs returns an empty collector; give it to zerolog.New.
func NewLogs() *Logs { return &Logs{added: make(chan struct{}, 1)} }

// Write records one JSON line; other writes are ignored.
func (l *Logs) Write(p []byte) (int, error) {
	var m map[string]any
	if json.Unmarshal(p, &m) == nil {
		l.mu.Lock()
		l.lines = append(l.lines, m)
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Violations returns the subjects of the permission violations logged so
// far ("nats permission violation" at level error), in order.
func (l *Logs) Violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.lines {
		if m["message"] == "nats permission violation" && m["level"] == "error" {
			s, _ := m["subject"].(string)
			out = append(out, s)
		}
	}
	return out
}

// WaitViolation waits until a permission violation of subject is logged,
// failing the test after 10s.
func (l *Logs) WaitViolation(tb testing.TB, subject string) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for !slices.Contains(l.Violations(), subject) {
		select {
		case <-l.added:
		case <-deadline:
			tb.Fatalf("no permission violation logged for %s; logged: %v", subject, l.Violations())
		}
	}
}
