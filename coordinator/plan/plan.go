package plan

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/payload"
)

// Phase says which record of a rotation a step's script is attached to.
type Phase string

// Phases, in execution order.
const (
	PhaseUser          Phase = "user"
	PhaseResource      Phase = "resource"
	PhaseConfiguration Phase = "configuration"
)

// Runners: how the worker on a step's Host runs the script.
const (
	// RunnerLocal: the worker runs the script itself.
	RunnerLocal = "local"
	// RunnerSSH: the gateway runs the script on the Target machine over SSH.
	RunnerSSH = inventory.ProtocolSSH
	// RunnerHTTP: the worker on Host sends the attachment's HTTP request.
	RunnerHTTP = "http"
	// RunnerWinRM: the gateway runs the script on the Target machine over
	// WinRM.
	RunnerWinRM = inventory.ProtocolWinRM
)

var (
	// ErrUnknownRecord: no record has the uid.
	ErrUnknownRecord = errors.New("unknown record")
	// ErrNotPAMUser: the record is not a pamUser.
	ErrNotPAMUser = errors.New("not a pamUser record")
	// ErrNoRotation: the pamUser has no rotation settings.
	ErrNoRotation = errors.New("no rotation settings")
	// ErrInvalidInventory: the inventory does not hold what the plan needs
	// (a configuration with a gateway, a reachable machine, the additional
	// records). It does not happen with an inventory from inventory.Load.
	ErrInvalidInventory = errors.New("invalid inventory")
)

// Step is one script to run.
type Step struct {
	// Index is the 1-based execution order.
	Index int
	Phase Phase
	// RecordUID is the uid of the record the script is attached to.
	RecordUID string
	Script    inventory.Script
	// Host is the host id of the worker that runs the step.
	Host string
	// Runner is RunnerLocal (the worker on Host runs the script itself), or
	// RunnerSSH / RunnerWinRM (the gateway on Host reaches the machine
	// Target over that protocol, with the machine's admin credential).
	Runner string
	// Target is the uid of the pamMachine for ssh and winrm runners, else "".
	Target string
	// Additional are the uids of the additional credential records given to
	// the script, in order.
	Additional []string
}

// Plan is the ordered steps of one PAM User's rotation.
type Plan struct {
	User          *inventory.Record
	Resource      *inventory.Record // nil when the rotation has none
	Configuration *inventory.Record
	Steps         []Step

	records map[string]*inventory.Record // every record a step refers to
}

// New plans the rotation of the pamUser userUID. Errors match (errors.Is)
// ErrUnknownRecord, ErrNotPAMUser, ErrNoRotation or ErrInvalidInventory.
func New(inv *inventory.Inventory, userUID string) (*Plan, error) {
	user, ok := inv.Record(userUID)
	switch {
	case !ok:
		return nil, fmt.Errorf("plan rotation of %q: %w", userUID, ErrUnknownRecord)
	case user.Type != inventory.TypeUser:
		return nil, fmt.Errorf("plan rotation of %q: %w (it is a %s)", userUID, ErrNotPAMUser, user.Type)
	case user.Rotation == nil:
		return nil, fmt.Errorf("plan rotation of %q: %w", userUID, ErrNoRotation)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("plan rotation of %q: %w: %s", userUID, ErrInvalidInventory, fmt.Sprintf(format, args...))
	}
	p := &Plan{User: user, records: map[string]*inventory.Record{user.UID: user}}

	cfgUID := user.Rotation.Configuration
	if cfgUID == "" {
		cfgUID = onlyConfiguration(inv)
	}
	cfg, ok := inv.Record(cfgUID)
	switch {
	case cfgUID == "":
		return nil, fail("no configuration")
	case !ok:
		return nil, fail("no configuration record %q", cfgUID)
	case cfg.Type != inventory.TypeConfiguration:
		return nil, fail("configuration %q is a %s", cfgUID, cfg.Type)
	case cfg.Gateway == "":
		return nil, fail("configuration %q has no gateway", cfgUID)
	}
	p.Configuration = cfg
	p.records[cfg.UID] = cfg

	if uid := user.Rotation.Resource; uid != "" {
		res, ok := inv.Record(uid)
		if !ok {
			return nil, fail("no resource record %q", uid)
		}
		if res.Type != inventory.TypeMachine && res.Type != inventory.TypeDatabase && res.Type != inventory.TypeDirectory {
			return nil, fail("resource %q is a %s", uid, res.Type)
		}
		p.Resource = res
		p.records[res.UID] = res
	}

	add := func(phase Phase, rec *inventory.Record, host, runner, target string) error {
		for _, s := range rec.Scripts {
			for _, uid := range s.Records {
				r, ok := inv.Record(uid)
				if !ok {
					return fail("script %s of %q: no additional record %q", s.Name, rec.UID, uid)
				}
				p.records[uid] = r
			}
			runner, target := runner, target
			if s.HTTP != nil {
				runner, target = RunnerHTTP, ""
			}
			p.Steps = append(p.Steps, Step{
				Index:      len(p.Steps) + 1,
				Phase:      phase,
				RecordUID:  rec.UID,
				Script:     s,
				Host:       host,
				Runner:     runner,
				Target:     target,
				Additional: slices.Clone(s.Records),
			})
		}
		return nil
	}
	if err := add(PhaseUser, user, cfg.Gateway, RunnerLocal, ""); err != nil {
		return nil, err
	}
	if res := p.Resource; res != nil && len(res.Scripts) > 0 {
		host, runner, target := cfg.Gateway, RunnerLocal, ""
		if res.Type == inventory.TypeMachine {
			switch c := res.Connection; {
			case res.Worker != "":
				host = res.Worker
			case c != nil && (c.Protocol == RunnerSSH || c.Protocol == RunnerWinRM):
				runner, target = c.Protocol, res.UID
				if admin, ok := inv.Record(c.Admin); ok {
					p.records[admin.UID] = admin
				}
			default:
				return nil, fail("machine %q has scripts but neither a worker nor a connection", res.UID)
			}
		}
		if err := add(PhaseResource, res, host, runner, target); err != nil {
			return nil, err
		}
	}
	if err := add(PhaseConfiguration, cfg, cfg.Gateway, RunnerLocal, ""); err != nil {
		return nil, err
	}
	return p, nil
}

// Record returns a record the plan refers to: the user, its resource and
// configuration, additional records, and the admin record of a machine
// reached over ssh or winrm.
func (p *Plan) Record(uid string) (*inventory.Record, bool) {
	r, ok := p.records[uid]
	return r, ok
}

// onlyConfiguration returns the uid of the inventory's only
// pamConfiguration, or "".
func onlyConfiguration(inv *inventory.Inventory) string {
	uid := ""
	for _, r := range inv.Records {
		if r.Type == inventory.TypeConfiguration {
			if uid != "" {
				return ""
			}
			uid = r.UID
		}
	}
	return uid
}

// Hosts returns the distinct hosts of the steps, in order of first use.
func (p *Plan) Hosts() []string {
	var hosts []string
	for _, s := range p.Steps {
		if !slices.Contains(hosts, s.Host) {
			hosts = append(hosts, s.Host)
		}
	}
	return hosts
}

// Input returns the payload input of step: the configuration, the resource
// (nil when none), the step's additional records in order, and the user,
// with the passwords and the user's login.
func (p *Plan) Input(step Step, newPassword, oldPassword string) payload.Input {
	in := payload.Input{
		User:        p.User.PayloadRecord(),
		NewPassword: newPassword,
		OldPassword: oldPassword,
		Login:       p.User.Login(),
	}
	if p.Configuration != nil {
		r := p.Configuration.PayloadRecord()
		in.Configuration = &r
	}
	if p.Resource != nil {
		r := p.Resource.PayloadRecord()
		in.Resource = &r
	}
	for _, uid := range step.Additional {
		if r, ok := p.records[uid]; ok {
			in.Additional = append(in.Additional, r.PayloadRecord())
		}
	}
	return in
}

// Secrets returns the secret values of every record involved in the plan —
// the user, the configuration, the resource, every step's additional
// records, and the admin credential of a machine reached over ssh or winrm —
// as payload.Record.Secrets finds them (password fields, secret fields,
// ...), without duplicates or empty strings. The new password is not a
// record value: add it yourself. Pass the result through
// payload.SecretVariants to mask output.
func (p *Plan) Secrets() []string {
	var out []string
	seen := make(map[string]bool)
	add := func(r *inventory.Record) {
		if r == nil {
			return
		}
		for _, s := range r.PayloadRecord().Secrets() {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	add(p.User)
	add(p.Resource)
	add(p.Configuration)
	for _, uid := range slices.Sorted(maps.Keys(p.records)) {
		add(p.records[uid])
	}
	return out
}

// ErrNotSupported is wrapped when a rotation needs a capability postrotate
// does not have yet.
var ErrNotSupported = errors.New("not supported")

// CheckSupported refuses rotations whose built-in part postrotate cannot
// perform yet: only scripts_only rotations and rotations with a NOOP field
// (which run the scripts and skip the built-in rotation) are run, so a
// script is never told of a password change that did not happen.
func (p *Plan) CheckSupported() error {
	rot := p.User.Rotation
	switch {
	case rot.Type == inventory.RotationScriptsOnly || p.User.NOOP():
		return nil
	case rot.Type == inventory.RotationIAMUser:
		return fmt.Errorf("rotation of %s: type iam_user: %w", p.User.UID, ErrNotSupported)
	default:
		return fmt.Errorf("rotation of %s: type %s needs a built-in rotator, which this version does not have (%w): use type scripts_only or add a text field labelled NOOP with value True",
			p.User.UID, rot.Type, ErrNotSupported)
	}
}
