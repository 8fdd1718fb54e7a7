package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Runners name how a task's script is run.
const (
	RunnerLocal = "local" // the worker runs the script as a local process
	RunnerSSH   = "ssh"   // the worker (a gateway) runs it on Target over SSH
	RunnerWinRM = "winrm" // the worker (a gateway) runs it on Target over WinRM
	RunnerHTTP  = "http"  // a declarative HTTP request, no process
	// RunnerRotate is a built-in rotator changing the user's password on
	// the resource (or, for a rollback, setting the old one back).
	RunnerRotate = "rotate"
)

// Task asks the worker of Host to run one post-rotation script.
type Task struct {
	SchemaVersion int    `json:"schema_version"`
	ID            string `json:"id"` // unique per task, also the JetStream dedup id
	RotationID    string `json:"rotation_id"`
	Step          int    `json:"step"` // 1-based position in the rotation
	Host          string `json:"host"` // host id of the worker that must run it
	Runner        string `json:"runner"`
	Target        string `json:"target,omitempty"` // machine record uid for ssh/winrm
	RecordUID     string `json:"uid"`              // record the script is attached to
	Script        Script `json:"script"`
	// Connection is how the worker reaches Target (ssh and winrm runners).
	Connection *Connection `json:"connection,omitempty"`
	// Request is the declarative request of the http runner.
	Request *Request `json:"request,omitempty"`
	// Rotation is what the rotate runner changes; its passwords are in
	// Secret.
	Rotation  *Rotation `json:"rotation,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is the time after which the task must not start: a worker
	// that receives it later refuses it instead of running a stale script.
	ExpiresAt time.Time `json:"expires_at"`
	// Secret holds what only the script may see: its stdin and the values to
	// mask. A task carries it in clear only when the coordinator does not
	// sign tasks (tests, an insecure setup); otherwise it travels sealed in
	// SealedSecret and the worker sets Secret once it has opened it.
	Secret *TaskSecret `json:"secret,omitempty"`
	// SealedSecret is Secret, JSON-encoded and sealed to the target
	// worker's curve key by the coordinator (see package envelope).
	SealedSecret []byte `json:"sealed_secret,omitempty"`
}

// Script is the attachment to run.
type Script struct {
	Name      string `json:"name"`
	Title     string `json:"title"`
	Command   string `json:"command,omitempty"` // interpreter prefix
	Content   []byte `json:"content"`
	TimeoutMS int64  `json:"timeout_ms"`
	// RetryOnInterrupt lets a worker run the script again when its task is
	// redelivered after a delivery that started it (a worker killed
	// mid-script). Without it such a task is reported "in doubt", not run.
	RetryOnInterrupt bool `json:"retry_on_interrupt,omitempty"`
}

// Timeout returns the script timeout as a duration.
func (s Script) Timeout() time.Duration { return time.Duration(s.TimeoutMS) * time.Millisecond }

// Connection is the non-secret part of how a gateway reaches a machine.
type Connection struct {
	Protocol string `json:"protocol"` // ssh | winrm | postgresql
	Host     string `json:"host"`
	Port     int    `json:"port"`
	HTTPS    bool   `json:"https,omitempty"`
	// KnownHosts is the content of a known_hosts file holding the machine's
	// host key; HostKey a pinned key in authorized_keys format (ssh).
	KnownHosts string `json:"known_hosts,omitempty"`
	HostKey    string `json:"host_key,omitempty"`
	// CACert is a PEM bundle for WinRM over HTTPS.
	CACert                string `json:"ca_cert,omitempty"`
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key,omitempty"`
}

// Request is a declarative HTTP request; URL, header values and body are
// templates over the payload, rendered by the worker.
type Request struct {
	Method       string            `json:"method"`
	URL          string            `json:"url"`
	Headers      map[string]string `json:"headers,omitempty"`
	Body         string            `json:"body,omitempty"`
	ExpectStatus []int             `json:"expect_status,omitempty"`
}

// Rotation is the non-secret part of a built-in rotation.
type Rotation struct {
	Kind     string `json:"kind"`  // linux | postgresql
	Login    string `json:"login"` // the account whose password changes
	Database string `json:"database,omitempty"`
	SSLMode  string `json:"sslmode,omitempty"`
	// Rollback marks the task that sets the old password back.
	Rollback bool `json:"rollback,omitempty"`
}

// TaskSecret is the secret part of a task.
type TaskSecret struct {
	Stdin []byte   `json:"stdin"` // the exact stdin bytes: one base64 line and "\n"
	Mask  []string `json:"mask"`  // raw secret values to mask in the output
	// Credential logs in to the connection's machine (ssh, winrm) or
	// database.
	Credential *Credential `json:"credential,omitempty"`
	// NewPassword is what the rotate runner sets; OldPassword the
	// password the account has before.
	NewPassword string `json:"new_password,omitempty"`
	OldPassword string `json:"old_password,omitempty"`
}

// Credential is the admin credential of a machine.
type Credential struct {
	Login      string `json:"login"`
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
	Passphrase string `json:"passphrase,omitempty"`
}

// ErrInvalidTask is wrapped by every task validation error.
var ErrInvalidTask = errors.New("invalid task")

// Validate checks that the task is complete and well-formed. Its errors name
// the offending field, never a secret.
//
// A task carries its secret part either in clear (Secret), which Validate
// checks with ValidateSecret, or sealed (SealedSecret), which it cannot
// read: whoever opens it calls ValidateSecret afterwards.
func (t Task) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidTask, fmt.Sprintf(format, args...))
	}
	switch {
	case checkVersion(t.SchemaVersion) != nil:
		return fmt.Errorf("%w: %w", ErrInvalidTask, checkVersion(t.SchemaVersion))
	case t.ID == "":
		return bad("id is empty")
	case !ValidToken(t.RotationID):
		return bad("rotation_id %q is not a valid subject token", t.RotationID)
	case t.Step < 1:
		return bad("step %d is not positive", t.Step)
	case t.Host == "":
		return bad("host is empty")
	case t.Runner == "":
		return bad("runner is empty")
	case t.Script.Name == "":
		return bad("script.name is empty")
	case (t.Runner == RunnerSSH || t.Runner == RunnerWinRM) && (t.Connection == nil || t.Connection.Host == ""):
		return bad("runner %s needs a connection with a host", t.Runner)
	case t.Runner == RunnerHTTP && (t.Request == nil || t.Request.URL == ""):
		return bad("runner http needs a request with a url")
	case t.Runner == RunnerRotate && (t.Rotation == nil || t.Rotation.Kind == "" || t.Rotation.Login == ""):
		return bad("runner rotate needs a rotation with a kind and a login")
	case t.Runner == RunnerRotate && t.Connection != nil && t.Connection.Host == "":
		return bad("runner rotate with a connection needs its host")
	case t.Script.TimeoutMS <= 0:
		return bad("script.timeout_ms %d is not positive", t.Script.TimeoutMS)
	case t.ExpiresAt.IsZero():
		return bad("expires_at is missing")
	case t.Secret == nil && len(t.SealedSecret) == 0:
		return bad("secret is missing (neither secret nor sealed_secret)")
	case t.Secret != nil && len(t.SealedSecret) > 0:
		return bad("secret and sealed_secret are both set")
	case t.Secret != nil:
		return t.ValidateSecret()
	}
	return nil
}

// ValidateSecret checks the secret part of the task against its runner:
// the stdin payload of a script, the credential of a connection, the new
// password of a rotation. Call it once a sealed secret is opened (into
// Secret); Validate calls it for a task that carries its secret in clear.
// Its errors name the missing field, never a value.
func (t Task) ValidateSecret() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidTask, fmt.Sprintf(format, args...))
	}
	s := t.Secret
	switch {
	case s == nil:
		return bad("secret is missing")
	case (t.Runner == RunnerSSH || t.Runner == RunnerWinRM) && s.Credential == nil:
		return bad("runner %s needs secret.credential", t.Runner)
	case t.Runner == RunnerRotate && s.NewPassword == "":
		return bad("runner rotate needs secret.new_password")
	case t.Runner == RunnerRotate && t.Connection != nil && s.Credential == nil:
		return bad("runner rotate with a connection needs secret.credential")
	case t.Runner != RunnerRotate && len(s.Stdin) == 0:
		return bad("secret.stdin is missing")
	}
	return nil
}

// Expired reports whether the task may no longer start at now.
func (t Task) Expired(now time.Time) bool { return !now.Before(t.ExpiresAt) }

// DecodeTask parses and validates a task. A task whose secret is sealed is
// valid without it: call ValidateSecret once it is opened.
func DecodeTask(data []byte) (Task, error) {
	var t Task
	if err := json.Unmarshal(data, &t); err != nil {
		return Task{}, fmt.Errorf("%w: decode: %w", ErrInvalidTask, err)
	}
	if err := t.Validate(); err != nil {
		return Task{}, err
	}
	return t, nil
}
