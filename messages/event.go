package messages

import "time"

// Event kinds, the last token of an event subject.
const (
	EventStarted   = "started"
	EventCompleted = "completed" // the rotation took effect and every step succeeded in the end
	EventFailed    = "failed"    // a step failed, the rotation did not take effect, or it could not run
)

// RotationEvent announces the start or the end of a rotation on
// <prefix>.events.rotation.<kind>.
type RotationEvent struct {
	SchemaVersion int       `json:"schema_version"`
	Kind          string    `json:"kind"`
	RotationID    string    `json:"rotation_id"`
	UserRecordUID string    `json:"user_record_uid"`
	Time          time.Time `json:"time"`
	Steps         int       `json:"steps"`               // steps planned (started) or run (completed/failed)
	Succeeded     int       `json:"succeeded,omitempty"` // on completed/failed
	Failed        int       `json:"failed,omitempty"`    // on completed/failed
	// Effect, on completed/failed: committed, not_committed, rolled_back or
	// rollback_failed — whether the new password took effect.
	Effect string `json:"effect,omitempty"`
	Error  string `json:"error,omitempty"` // why the rotation failed as a whole
}

// StepEvent announces the start or the end of one step on
// <prefix>.events.step.<kind>.
type StepEvent struct {
	SchemaVersion int       `json:"schema_version"`
	Kind          string    `json:"kind"`
	RotationID    string    `json:"rotation_id"`
	Step          int       `json:"step"`
	Host          string    `json:"host"`
	UID           string    `json:"uid"`
	Name          string    `json:"name"`
	Time          time.Time `json:"time"`
	Success       bool      `json:"success,omitempty"`
	Error         string    `json:"error,omitempty"`
}
