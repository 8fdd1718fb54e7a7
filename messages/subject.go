package messages

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix is the default first token of every subject.
const DefaultPrefix = "postrotate"

// Subjects builds subject, stream and consumer names under one prefix.
// The zero value uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Tasks is the subject of the tasks for host.
func (s Subjects) Tasks(host string) string { return s.prefix() + ".tasks." + HostToken(host) }

// AllTasks matches every task subject.
func (s Subjects) AllTasks() string { return s.prefix() + ".tasks.>" }

// Result is the subject of the result of one step of a rotation.
func (s Subjects) Result(rotationID string, step int) string {
	return s.prefix() + ".results." + rotationID + "." + strconv.Itoa(step)
}

// Results matches every result of one rotation.
func (s Subjects) Results(rotationID string) string {
	return s.prefix() + ".results." + rotationID + ".>"
}

// AllResults matches every result.
func (s Subjects) AllResults() string { return s.prefix() + ".results.>" }

// Refused is the subject where the worker of host reports the task
// messages it refused because they are not the coordinator's own: unsigned,
// signed by another key, changed, replayed, meant for another host, or with
// a secret not sealed for that worker. They are kept apart from the step
// results (Result) so that a forged task cannot pre-empt the result of the
// step it claims to be.
func (s Subjects) Refused(host string) string { return s.prefix() + ".refused." + HostToken(host) }

// AllRefused matches every refusal subject.
func (s Subjects) AllRefused() string { return s.prefix() + ".refused.>" }

// RefusedMsgID is the JetStream message id of the refusal of the task
// message at stream sequence seq of the tasks stream: a retried publish of
// one refusal is dropped as a duplicate, two refused messages are two
// refusals. The dispatcher matches it against the sequence of the task it
// published.
func RefusedMsgID(seq uint64) string { return "refused-" + strconv.FormatUint(seq, 10) }

// RotationEvent is the subject of a rotation event of the given kind.
func (s Subjects) RotationEvent(kind string) string { return s.prefix() + ".events.rotation." + kind }

// StepEvent is the subject of a step event of the given kind.
func (s Subjects) StepEvent(kind string) string { return s.prefix() + ".events.step." + kind }

// AllEvents matches every event.
func (s Subjects) AllEvents() string { return s.prefix() + ".events.>" }

// TasksStream, ResultsStream and EventsStream name the JetStream streams.
func (s Subjects) TasksStream() string   { return s.streamPrefix() + "_TASKS" }
func (s Subjects) ResultsStream() string { return s.streamPrefix() + "_RESULTS" }
func (s Subjects) EventsStream() string  { return s.streamPrefix() + "_EVENTS" }

func (s Subjects) streamPrefix() string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(s.prefix()))
}

// Consumer is the name of the durable pull consumer of host's tasks.
func (s Subjects) Consumer(host string) string { return "host_" + HostToken(host) }

// HostToken encodes a host id into a token that is safe both in a subject
// and in a stream or consumer name: ASCII letters, digits and '-' are kept,
// every other byte (including '_') becomes '_' and two upper-case hex digits.
// The encoding is injective; ParseHostToken reverses it.
func HostToken(host string) string {
	var b strings.Builder
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return b.String()
}

// ErrBadToken is returned by ParseHostToken for a token HostToken cannot
// have produced.
var ErrBadToken = errors.New("malformed host token")

// ParseHostToken reverses HostToken.
func ParseHostToken(token string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '_' && i+2 < len(token):
			v, err := strconv.ParseUint(token[i+1:i+3], 16, 8)
			if err != nil || strings.ToUpper(token[i+1:i+3]) != token[i+1:i+3] {
				return "", fmt.Errorf("%w at byte %d", ErrBadToken, i)
			}
			b.WriteByte(byte(v))
			i += 2
		default:
			return "", fmt.Errorf("%w at byte %d", ErrBadToken, i)
		}
	}
	return b.String(), nil
}

// ValidToken reports whether s can be used verbatim as one subject token
// (rotation ids): non-empty, at most 128 bytes, ASCII letters, digits, '-'
// and '_' only.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ResultMsgID is the JetStream message id of a step's result. Whoever
// publishes a step's result first (the worker, or the coordinator when the
// step's deadline passes) wins; later copies inside the stream's duplicate
// window are dropped.
func ResultMsgID(rotationID string, step int) string {
	return "result-" + rotationID + "-" + strconv.Itoa(step)
}

// PriorityGroup is the priority group every worker of a host pulls with.
// Task consumers use the pinned-client policy: of several workers started
// for one host, the server delivers to one at a time.
const PriorityGroup = "postrotate"

// RunsBucket names the KV bucket of rotation runs (plan, state, locks).
func (s Subjects) RunsBucket() string { return s.streamPrefix() + "_RUNS" }

// WorkersBucket names the KV bucket where workers register and heartbeat.
// Keys are WorkerKey(host, name).
func (s Subjects) WorkersBucket() string { return s.streamPrefix() + "_WORKERS" }

// StartedBucket names the KV bucket of "script started" markers, keyed by
// task id: a redelivered task whose marker exists may have run already.
func (s Subjects) StartedBucket() string { return s.streamPrefix() + "_STARTED" }

// WorkerKey is the key of a worker in the workers bucket:
// "<host token>.<name token>".
func WorkerKey(host, name string) string { return HostToken(host) + "." + HostToken(name) }

// RecordsBucket names the KV bucket of the record store (the vault): the
// records applied from the inventory, their current passwords and history,
// sealed with the coordinator's key.
func (s Subjects) RecordsBucket() string { return s.streamPrefix() + "_RECORDS" }

// SchedulesBucket names the KV bucket of the schedulers: the leader lease
// and the last slot fired for each scheduled user.
func (s Subjects) SchedulesBucket() string { return s.streamPrefix() + "_SCHEDULES" }
