package messages

import "time"

// WorkerInfo is what a worker registers, and refreshes with every
// heartbeat, in the workers bucket.
type WorkerInfo struct {
	SchemaVersion int       `json:"schema_version"`
	Host          string    `json:"host"`
	Name          string    `json:"name"`
	Version       string    `json:"version"`
	OS            string    `json:"os"`
	Arch          string    `json:"arch"`
	StartedAt     time.Time `json:"started_at"`
	LastSeen      time.Time `json:"last_seen"`
	// Runners lists the runners this worker has (local, ssh, ...).
	Runners []string `json:"runners,omitempty"`
}

// StartedMarker is the value of a task's key in the started bucket, which
// a worker writes before it runs the task's script: which worker started
// it, when, and at which delivery. ReportedAt is set once the script's
// result is published. A later delivery that finds a marker without
// ReportedAt reports the step in doubt instead of running it again.
type StartedMarker struct {
	Worker     string    `json:"worker"`
	Host       string    `json:"host"`
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at"`
	ReportedAt time.Time `json:"reported_at,omitzero"`
}
