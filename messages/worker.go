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
