package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// SchemaVersion is the version of the wire format written by this module.
// Readers refuse messages with a newer version.
const SchemaVersion = 1

// Operating systems reported in RotationResult.System.
const (
	SystemLinux   = "Linux"
	SystemWindows = "Windows"
	SystemDarwin  = "Darwin"
)

// RotationResult is the outcome of one post-rotation script. The first eight
// fields are Keeper's RotationResult attributes, named exactly; the rest are
// postrotate's extensions.
type RotationResult struct {
	UID     string `json:"uid"`     // record the script is attached to
	Command string `json:"command"` // what was run, never the payload
	System  string `json:"system"`  // Linux, Windows, Darwin
	Title   string `json:"title"`   // attachment title, defaults to Name
	Name    string `json:"name"`    // script file name
	Success bool   `json:"success"`
	Stdout  string `json:"stdout"`
	Stderr  string `json:"stderr"`

	SchemaVersion   int       `json:"schema_version"`
	RotationID      string    `json:"rotation_id"`
	Step            int       `json:"step"`
	Host            string    `json:"host"`
	Worker          string    `json:"worker,omitempty"`
	Attempt         int       `json:"attempt,omitempty"`
	ExitCode        int       `json:"exit_code"`
	StartedAt       time.Time `json:"started_at,omitzero"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
	DurationMS      int64     `json:"duration_ms"`
	StdoutTruncated bool      `json:"stdout_truncated"`
	StderrTruncated bool      `json:"stderr_truncated"`
	// Error says why the script could not run or complete: a timeout, an
	// unreachable host, a refused task. Empty when the script ran to its end.
	Error string `json:"error,omitempty"`
}

// NotRun is the failed result of task's step when its script did not run,
// or did not report: exit code -1, no output, started and finished at at,
// with reason as its Error. Only the fields that identify the step are read
// from task (RotationID, Step, Host, RecordUID, Script.Name and Title), so
// a coordinator that has only the step's plan, or a worker that could read
// only a message's head, builds it the same way. Worker and Attempt are the
// caller's to set.
func NotRun(task Task, reason string, at time.Time) RotationResult {
	return RotationResult{
		UID: task.RecordUID, Title: task.Script.Title, Name: task.Script.Name,
		SchemaVersion: SchemaVersion, RotationID: task.RotationID, Step: task.Step, Host: task.Host,
		ExitCode: -1, StartedAt: at, FinishedAt: at, Error: reason,
	}
}

// WasSuccess reports whether the script succeeded (Keeper's was_success).
func (r RotationResult) WasSuccess() bool { return r.Success }

// WasFailure reports whether the script failed (Keeper's was_failure).
func (r RotationResult) WasFailure() bool { return !r.Success }

// ErrUnsupportedVersion is returned when a message was written by a newer
// schema than this module knows.
var ErrUnsupportedVersion = errors.New("unsupported schema version")

// DecodeResult parses a RotationResult and checks its schema version.
func DecodeResult(data []byte) (RotationResult, error) {
	var r RotationResult
	if err := json.Unmarshal(data, &r); err != nil {
		return RotationResult{}, fmt.Errorf("decode rotation result: %w", err)
	}
	if err := checkVersion(r.SchemaVersion); err != nil {
		return RotationResult{}, fmt.Errorf("decode rotation result: %w", err)
	}
	return r, nil
}

func checkVersion(v int) error {
	if v < 1 || v > SchemaVersion {
		return fmt.Errorf("%w %d (this build reads 1..%d)", ErrUnsupportedVersion, v, SchemaVersion)
	}
	return nil
}
