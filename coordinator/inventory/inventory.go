package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/postrotate/postrotate/coordinator/password"
)

// Record types with a role in a rotation. Any other type is a plain record
// (login, ...) that scripts may receive as an additional credential.
const (
	TypeConfiguration = "pamConfiguration"
	TypeMachine       = "pamMachine"
	TypeDatabase      = "pamDatabase"
	TypeDirectory     = "pamDirectory"
	TypeUser          = "pamUser"
)

// Rotation types of a PAM User.
const (
	RotationGeneral     = "general"
	RotationIAMUser     = "iam_user"
	RotationScriptsOnly = "scripts_only" // "Run PAM scripts only"
)

// Connection protocols, used by the gateway to reach a machine without a
// worker.
const (
	ProtocolSSH   = "ssh"
	ProtocolWinRM = "winrm"
	// ProtocolPostgreSQL is how the gateway reaches a pamDatabase to
	// rotate a role's password (general rotation).
	ProtocolPostgreSQL = "postgresql"
)

const (
	// DefaultScriptTimeout is the timeout of a script that does not set one.
	DefaultScriptTimeout = 5 * time.Minute
	// MaxScriptSize is the largest script file an inventory may attach.
	MaxScriptSize = 16 << 20
	// MaxHostIDLength is the longest host id (gateway, worker).
	MaxHostIDLength = 128
	// MaxUIDLength is the longest record uid.
	MaxUIDLength = 128
)

// Inventory is a validated inventory file: the records of a deployment.
type Inventory struct {
	// Version of the file format; always 1.
	Version int
	// Records in file order.
	Records []Record
	// Dir is the directory of the file; script paths are relative to it.
	Dir string
}

// Record is one record: a PAM Configuration, Machine, Database, Directory or
// User, or a plain record used as an additional credential.
type Record struct {
	UID   string
	Type  string
	Title string // defaults to UID
	// Gateway is, on a pamConfiguration, the host id of the gateway that
	// runs gateway-side scripts.
	Gateway string
	// Worker is, on a pamMachine, the host id of a worker installed on the
	// machine, which runs the machine's scripts.
	Worker string
	// Connection is, on a pamMachine without a worker, how the gateway
	// reaches the machine to run its scripts.
	Connection *Connection
	Fields     []Field
	Scripts    []Script
	// Rotation holds the rotation settings of a pamUser; nil elsewhere.
	Rotation *Rotation
}

// Connection is how a gateway reaches a machine without a worker.
type Connection struct {
	// Protocol is ProtocolSSH or ProtocolWinRM.
	Protocol string `yaml:"protocol"`
	// Host name or address of the machine.
	Host string `yaml:"host"`
	// Port defaults to 22 for ssh, 5985 for winrm, 5986 for winrm over HTTPS.
	Port int `yaml:"port"`
	// HTTPS selects WinRM over HTTPS.
	HTTPS bool `yaml:"https"`
	// Admin is the uid of the record holding the admin credential used to
	// log in.
	Admin string `yaml:"admin"`
	// KnownHosts is an OpenSSH known_hosts file (ssh only).
	KnownHosts string `yaml:"known_hosts"`
	// HostKey is the machine's public host key in authorized_keys format
	// (ssh only).
	HostKey string `yaml:"host_key"`
	// CACert is a PEM CA bundle file for WinRM over HTTPS, or the roots
	// of a PostgreSQL server's certificate.
	CACert string `yaml:"ca_cert"`
	// Database is the database a PostgreSQL connection opens; defaults to
	// "postgres".
	Database string `yaml:"database"`
	// SSLMode is libpq's sslmode of a PostgreSQL connection (disable,
	// allow, prefer, require, verify-ca, verify-full); defaults to prefer.
	SSLMode string `yaml:"sslmode"`
	// KnownHostsData and CACertData are the files' contents, read at load.
	KnownHostsData []byte `yaml:"-"`
	CACertData     []byte `yaml:"-"`
	// InsecureIgnoreHostKey skips host key (or, for winrm over HTTPS,
	// certificate) verification. For tests only.
	InsecureIgnoreHostKey bool `yaml:"insecure_ignore_host_key"`
}

// Field is one field of a record.
type Field struct {
	Type  string
	Label string
	// Value is a scalar (string, int, int64, uint64, float64, bool), an object
	// (map[string]any) or a list ([]any) meaning several values; nil is no
	// value. Nested values have the same shapes.
	Value any
	// Secret marks the field secret (its values are masked in script
	// output) in addition to the secret field types known to the payload
	// package (password, secret, pinCode, oneTimeCode, otp, privateKey, and
	// the privateKey of a keyPair). In a secret field, a scalar written as a
	// number or boolean is kept as the text written, so that it is masked.
	Secret bool
}

// IsSecret reports whether the field's value is a secret: marked secret,
// or of a secret type (password, secret, pinCode, oneTimeCode, otp,
// privateKey, keyPair).
func (f Field) IsSecret() bool {
	return f.Secret || f.Type == "keyPair" || slices.Contains(secretFieldTypes, f.Type)
}

// secretFieldTypes mirrors the payload package's secret field types: their
// scalar values are kept as text.
var secretFieldTypes = []string{"password", "secret", "pinCode", "oneTimeCode", "otp", "privateKey"}

// Script is a script attached to a record.
type Script struct {
	// File is the path as written in the inventory, relative to its Dir
	// unless absolute.
	File string
	// Name defaults to the base name of File.
	Name string
	// Title defaults to Name.
	Title string
	// Command is an interpreter prefixed to the script path (e.g. python3);
	// empty means the script's shebang runs it.
	Command string
	// Records are the uids of the additional credential records given to the
	// script, in order.
	Records []string
	// Timeout defaults to DefaultScriptTimeout.
	Timeout time.Duration
	// Content is the script, read when the inventory is loaded.
	Content []byte
	// HTTP is a declarative HTTP request run instead of a script file.
	HTTP *HTTPRequest
	// RetryOnInterrupt allows running the script again when the worker
	// running it died mid-script (its outcome is unknown). Default false:
	// such a step is reported "in doubt" and not run twice.
	RetryOnInterrupt bool
}

// HTTPRequest is a declarative HTTP attachment: the request is sent by the
// worker with retries. URL, header values and Body are Go templates over the
// payload ({{.NewPassword}}, {{.User}}, {{record "Title" "password"}}).
type HTTPRequest struct {
	Method       string // defaults to POST
	URL          string
	Headers      map[string]string
	Body         string
	ExpectStatus []int // empty: any 2xx
}

// Rotation holds the rotation settings of a PAM User.
type Rotation struct {
	// Type is RotationGeneral, RotationIAMUser or RotationScriptsOnly.
	Type string
	// Resource is the uid of the pamMachine, pamDatabase or pamDirectory the
	// rotation targets; required for general rotations.
	Resource string
	// Configuration is the uid of the pamConfiguration. When the file omits
	// it and the inventory has exactly one pamConfiguration, that one is set.
	Configuration string
	// Schedule is the schedule as written (see ParseSchedule); "" means on
	// demand.
	Schedule string
	// Timezone is the IANA zone of a cron Schedule; "" means UTC.
	Timezone string
	// Complexity of the new password, with defaults applied.
	Complexity password.Rules
	// StopOnFailure ends the rotation at the first failed script: the
	// scripts after it are not run and are reported as skipped. By default
	// every script runs whatever happened before it.
	StopOnFailure bool
}

// ParsedSchedule returns the parsed Schedule. It only fails for a Rotation
// that was not validated by Parse or Load.
func (r *Rotation) ParsedSchedule() (Schedule, error) {
	return ParseSchedule(r.Schedule, r.Timezone)
}

// Load reads and validates the inventory file at path. YAML and JSON are
// accepted whatever the extension. A file that cannot be read gives an I/O
// error; an invalid inventory gives a *ValidationError listing every problem.
func Load(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	return Parse(data, filepath.Dir(abs))
}

// Record returns the record with the given uid.
func (inv *Inventory) Record(uid string) (*Record, bool) {
	for i := range inv.Records {
		if inv.Records[i].UID == uid {
			return &inv.Records[i], true
		}
	}
	return nil, false
}

// Login returns the first value of the record's first login field, or "".
func (r *Record) Login() string { return r.firstValue("login") }

// Password returns the first value of the record's first password field, or
// "".
func (r *Record) Password() string { return r.firstValue("password") }

// PrivateKey returns the record's SSH private key and its passphrase: the
// first privateKey field (by type, or labelled "privateKey" or "Private PEM
// Key"), else the private half of a keyPair field; the passphrase from a
// field labelled "passphrase".
func (r *Record) PrivateKey() (key, passphrase string) {
	for _, f := range r.Fields {
		if v, ok := f.Value.(string); ok && (f.Type == "privateKey" || f.Label == "privateKey" || f.Label == "Private PEM Key") && key == "" {
			key = v
		}
		if v, ok := f.Value.(map[string]any); ok && f.Type == "keyPair" && key == "" {
			key, _ = v["privateKey"].(string)
		}
		if v, ok := f.Value.(string); ok && f.Label == "passphrase" {
			passphrase = v
		}
	}
	return key, passphrase
}

// NOOP reports whether the record has a text field labelled NOOP whose value
// is True (any case): the built-in rotation is skipped and only the scripts
// run.
func (r *Record) NOOP() bool {
	for _, f := range r.Fields {
		if f.Type != "text" || f.Label != "NOOP" {
			continue
		}
		switch v := first(f.Value).(type) {
		case bool:
			return v
		case string:
			return strings.EqualFold(strings.TrimSpace(v), "true")
		}
	}
	return false
}

// Switch reads a yes/no setting: the first field labelled label (any
// case) — a checkbox, or a text "true"/"false" (any case). ok is false when
// the record has no such field or its value is neither.
func (r *Record) Switch(label string) (value, ok bool) {
	for _, f := range r.Fields {
		if !strings.EqualFold(strings.TrimSpace(f.Label), label) {
			continue
		}
		switch v := first(f.Value).(type) {
		case bool:
			return v, true
		case string:
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "true", "yes", "on":
				return true, true
			case "false", "no", "off":
				return false, true
			}
		}
		return false, false
	}
	return false, false
}

func (r *Record) firstValue(fieldType string) string {
	for _, f := range r.Fields {
		if f.Type == fieldType {
			return scalarString(first(f.Value))
		}
	}
	return ""
}

// first returns the first of several values, or the value itself.
func first(v any) any {
	if l, ok := v.([]any); ok {
		if len(l) == 0 {
			return nil
		}
		return l[0]
	}
	return v
}

// scalarString formats a scalar value; objects and nil give "".
func scalarString(v any) string {
	switch v := v.(type) {
	case nil, map[string]any, []any:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}
