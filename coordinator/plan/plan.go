package plan

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/payload"
)

// Phase says which record of a rotation a step's script is attached to.
type Phase string

// Phases, in execution order.
const (
	// PhaseRotation is the built-in rotation of a general rotation: the
	// user's password changed on the resource, before any script.
	PhaseRotation      Phase = "rotation"
	PhaseUser          Phase = "user"
	PhaseResource      Phase = "resource"
	PhaseConfiguration Phase = "configuration"
	// PhaseRerun is a failed script run again (Re-run On Post Rotation
	// Fail); PhaseRollback sets the old password back on the resource.
	PhaseRerun    Phase = "rerun"
	PhaseRollback Phase = "rollback"
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
	// RunnerRotate: the worker on Host changes the password with a built-in
	// rotator, on the Target resource (or its own machine when Target is
	// empty).
	RunnerRotate = "rotate"
)

// Built-in rotator kinds.
const (
	RotateLinux      = "linux"
	RotatePostgreSQL = "postgresql"
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
	// Rotation is the password change of a RunnerRotate step.
	Rotation *Rotation
}

// Rotation is what a built-in rotation step changes.
type Rotation struct {
	// Kind is RotateLinux or RotatePostgreSQL.
	Kind string
	// Database and SSLMode of a PostgreSQL connection.
	Database, SSLMode string
	// Rollback sets the old password back: the step's task carries the
	// passwords swapped.
	Rollback bool
}

// Policy is what happens when part of a rotation fails: Keeper's
// record-level switches, looked up on the user, then the resource, then
// the configuration (fields labelled as below, checkbox or text "true" /
// "false").
type Policy struct {
	// RollbackOnPasswordFail: when the built-in rotation fails, set the old
	// password back (it may have been changed). Default true.
	RollbackOnPasswordFail bool
	// RollbackOnPostRotationFail: when a script still fails, set the old
	// password back and do not commit the new one. Default false.
	RollbackOnPostRotationFail bool
	// RerunOnPostRotationFail: run each failed script once more. Default
	// false.
	RerunOnPostRotationFail bool
}

// The labels of the policy switches.
const (
	LabelRollbackOnPasswordFail     = "Rollback On Password Fail"
	LabelRollbackOnPostRotationFail = "Rollback On Post Rotation Fail"
	LabelRerunOnPostRotationFail    = "Re-run On Post Rotation Fail"
)

// DefaultRotationTimeout bounds a built-in rotation step.
const DefaultRotationTimeout = 2 * time.Minute

// Plan is the ordered steps of one PAM User's rotation.
type Plan struct {
	User          *inventory.Record
	Resource      *inventory.Record // nil when the rotation has none
	Configuration *inventory.Record
	// Steps are the planned steps: the built-in rotation first when the
	// rotation has one, then the scripts. Re-runs and rollbacks are
	// decided while the rotation runs (RerunStep, RollbackStep).
	Steps  []Step
	Policy Policy

	records     map[string]*inventory.Record // every record a step refers to
	unsupported error                        // why CheckSupported refuses the plan
}

// New plans the rotation of the pamUser userUID. Errors match (errors.Is)
// ErrUnknownRecord, ErrNotPAMUser, ErrNoRotation or ErrInvalidInventory.
func New(inv *inventory.Inventory, userUID string) (*Plan, error) {
	user, err := rotatedUser(inv, userUID)
	if err != nil {
		return nil, err
	}
	p := &Plan{User: user, records: map[string]*inventory.Record{user.UID: user}}
	if err := p.findConfiguration(inv); err != nil {
		return nil, err
	}
	if err := p.findResource(inv); err != nil {
		return nil, err
	}
	p.Policy = Policy{
		RollbackOnPasswordFail:     p.lookupSwitch(LabelRollbackOnPasswordFail, true),
		RollbackOnPostRotationFail: p.lookupSwitch(LabelRollbackOnPostRotationFail, false),
		RerunOnPostRotationFail:    p.lookupSwitch(LabelRerunOnPostRotationFail, false),
	}
	if user.Rotation.Type == inventory.RotationGeneral && !user.NOOP() {
		step, err := p.rotationStep(inv, p.Configuration.Gateway)
		if err != nil {
			p.unsupported = err
		} else {
			p.Steps = append(p.Steps, step)
		}
	}
	if err := p.planScripts(inv); err != nil {
		return nil, err
	}
	return p, nil
}

// rotatedUser returns the pamUser userUID, which must have rotation
// settings.
func rotatedUser(inv *inventory.Inventory, userUID string) (*inventory.Record, error) {
	user, ok := inv.Record(userUID)
	switch {
	case !ok:
		return nil, fmt.Errorf("plan rotation of %q: %w", userUID, ErrUnknownRecord)
	case user.Type != inventory.TypeUser:
		return nil, fmt.Errorf("plan rotation of %q: %w (it is a %s)", userUID, ErrNotPAMUser, user.Type)
	case user.Rotation == nil:
		return nil, fmt.Errorf("plan rotation of %q: %w", userUID, ErrNoRotation)
	}
	return user, nil
}

// invalidf returns an error wrapping ErrInvalidInventory: the inventory
// does not hold what the user's rotation needs.
func (p *Plan) invalidf(format string, args ...any) error {
	return fmt.Errorf("plan rotation of %q: %w: %s", p.User.UID, ErrInvalidInventory, fmt.Sprintf(format, args...))
}

// findConfiguration sets the configuration of the rotation: the one it
// names, or the inventory's only one. It must have a gateway.
func (p *Plan) findConfiguration(inv *inventory.Inventory) error {
	cfgUID := p.User.Rotation.Configuration
	if cfgUID == "" {
		cfgUID = onlyConfiguration(inv)
	}
	cfg, ok := inv.Record(cfgUID)
	switch {
	case cfgUID == "":
		return p.invalidf("no configuration")
	case !ok:
		return p.invalidf("no configuration record %q", cfgUID)
	case cfg.Type != inventory.TypeConfiguration:
		return p.invalidf("configuration %q is a %s", cfgUID, cfg.Type)
	case cfg.Gateway == "":
		return p.invalidf("configuration %q has no gateway", cfgUID)
	}
	p.Configuration = cfg
	p.records[cfg.UID] = cfg
	return nil
}

// findResource sets the resource of the rotation, if it names one: a
// pamMachine, pamDatabase or pamDirectory.
func (p *Plan) findResource(inv *inventory.Inventory) error {
	uid := p.User.Rotation.Resource
	if uid == "" {
		return nil
	}
	res, ok := inv.Record(uid)
	if !ok {
		return p.invalidf("no resource record %q", uid)
	}
	if res.Type != inventory.TypeMachine && res.Type != inventory.TypeDatabase && res.Type != inventory.TypeDirectory {
		return p.invalidf("resource %q is a %s", uid, res.Type)
	}
	p.Resource = res
	p.records[res.UID] = res
	return nil
}

// planScripts adds the scripts' steps, after the built-in rotation: the
// user's, then the resource's, then the configuration's.
func (p *Plan) planScripts(inv *inventory.Inventory) error {
	onGateway := runsOn{host: p.Configuration.Gateway, runner: RunnerLocal}
	if err := p.addScripts(inv, PhaseUser, p.User, onGateway); err != nil {
		return err
	}
	if res := p.Resource; res != nil && len(res.Scripts) > 0 {
		where, err := p.resourceRunner(inv)
		if err != nil {
			return err
		}
		if err := p.addScripts(inv, PhaseResource, res, where); err != nil {
			return err
		}
	}
	return p.addScripts(inv, PhaseConfiguration, p.Configuration, onGateway)
}

// runsOn is where a step runs: the worker on host runs it with runner, on
// the machine target for the ssh and winrm runners.
type runsOn struct {
	host, runner, target string
}

// resourceRunner returns where the resource's scripts run: on the gateway,
// on a machine's worker, or from the gateway over a machine's ssh or winrm
// connection.
func (p *Plan) resourceRunner(inv *inventory.Inventory) (runsOn, error) {
	res := p.Resource
	where := runsOn{host: p.Configuration.Gateway, runner: RunnerLocal}
	if res.Type != inventory.TypeMachine {
		return where, nil
	}
	switch c := res.Connection; {
	case res.Worker != "":
		where.host = res.Worker
	case c != nil && (c.Protocol == RunnerSSH || c.Protocol == RunnerWinRM):
		where.runner, where.target = c.Protocol, res.UID
		p.addAdmin(inv, c)
	default:
		return runsOn{}, p.invalidf("machine %q has scripts but neither a worker nor a connection", res.UID)
	}
	return where, nil
}

// addScripts adds a step per script of rec, in phase, run where says (an
// http attachment is sent by the worker on its host), with the script's
// additional records.
func (p *Plan) addScripts(inv *inventory.Inventory, phase Phase, rec *inventory.Record, where runsOn) error {
	for _, s := range rec.Scripts {
		for _, uid := range s.Records {
			r, ok := inv.Record(uid)
			if !ok {
				return p.invalidf("script %s of %q: no additional record %q", s.Name, rec.UID, uid)
			}
			p.records[uid] = r
		}
		runner, target := where.runner, where.target
		if s.HTTP != nil {
			runner, target = RunnerHTTP, ""
		}
		p.Steps = append(p.Steps, Step{
			Index:      len(p.Steps) + 1,
			Phase:      phase,
			RecordUID:  rec.UID,
			Script:     s,
			Host:       where.host,
			Runner:     runner,
			Target:     target,
			Additional: slices.Clone(s.Records),
		})
	}
	return nil
}

// addAdmin adds the record of the admin credential of connection c, when
// the inventory has it.
func (p *Plan) addAdmin(inv *inventory.Inventory, c *inventory.Connection) {
	if admin, ok := inv.Record(c.Admin); ok {
		p.records[admin.UID] = admin
	}
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

// CheckSupported refuses rotations postrotate cannot perform: iam_user
// rotations, and general rotations on a resource no built-in rotator
// handles (a Windows machine, a directory, a machine without a
// connection or worker). scripts_only rotations and rotations with a NOOP
// field run only the scripts and are always supported.
func (p *Plan) CheckSupported() error {
	rot := p.User.Rotation
	switch {
	case rot.Type == inventory.RotationScriptsOnly || p.User.NOOP():
		return nil
	case rot.Type == inventory.RotationIAMUser:
		return fmt.Errorf("rotation of %s: type iam_user (cloud IAM APIs) is %w: use type scripts_only with a script that calls your cloud's API, or add a text field labelled NOOP with value True", p.User.UID, ErrNotSupported)
	case p.unsupported != nil:
		return fmt.Errorf("rotation of %s: %w", p.User.UID, p.unsupported)
	}
	return nil
}

// rotationStep plans the built-in rotation of a general rotation on its
// resource: a Linux account on a machine (through the machine's worker, or
// from the gateway over SSH), or a PostgreSQL role on a database reached
// from the gateway. Its error wraps ErrNotSupported.
func (p *Plan) rotationStep(inv *inventory.Inventory, gateway string) (Step, error) {
	res := p.Resource
	if res == nil {
		return Step{}, fmt.Errorf("a general rotation needs a resource: %w", ErrNotSupported)
	}
	step := Step{Index: 1, Phase: PhaseRotation, RecordUID: p.User.UID, Host: gateway, Runner: RunnerRotate, Rotation: &Rotation{}}
	if err := chooseRotator(res, &step); err != nil {
		return Step{}, err
	}
	if step.Target != "" {
		p.addAdmin(inv, res.Connection)
	}
	login := p.User.Login()
	if login == "" {
		return Step{}, fmt.Errorf("user %s has no login field to rotate: %w", p.User.UID, ErrNotSupported)
	}
	step.Script = inventory.Script{
		Name:    "rotate-" + step.Rotation.Kind,
		Title:   fmt.Sprintf("Rotate the password of %s on %s (%s)", login, res.UID, step.Rotation.Kind),
		Timeout: DefaultRotationTimeout,
		// Setting a password is idempotent: a rotation interrupted with its
		// worker runs again instead of being left in doubt.
		RetryOnInterrupt: true,
	}
	return step, nil
}

// chooseRotator sets the built-in rotator of step for the resource res
// (Rotation) and where it runs (Host, or Target reached from the gateway).
// Its error wraps ErrNotSupported.
func chooseRotator(res *inventory.Record, step *Step) error {
	c := res.Connection
	switch {
	case res.Type == inventory.TypeMachine && res.Worker != "":
		step.Host, step.Rotation.Kind = res.Worker, RotateLinux
	case res.Type == inventory.TypeMachine && c != nil && c.Protocol == inventory.ProtocolSSH:
		step.Target, step.Rotation.Kind = res.UID, RotateLinux
	case res.Type == inventory.TypeDatabase && c != nil && c.Protocol == inventory.ProtocolPostgreSQL:
		step.Target, step.Rotation.Kind = res.UID, RotatePostgreSQL
		step.Rotation.Database, step.Rotation.SSLMode = c.Database, c.SSLMode
	case res.Type == inventory.TypeMachine && c != nil && c.Protocol == inventory.ProtocolWinRM:
		return fmt.Errorf("built-in rotation of a Windows account over winrm on %s is %w yet: use scripts_only", res.UID, ErrNotSupported)
	case res.Type == inventory.TypeDatabase:
		return fmt.Errorf("built-in rotation on database %s needs connection: {protocol: postgresql, ...} (the only database type supported): %w", res.UID, ErrNotSupported)
	default:
		return fmt.Errorf("no built-in rotator for a %s (%s): %w", res.Type, res.UID, ErrNotSupported)
	}
	return nil
}

// RotationStep returns the planned built-in rotation step, if any.
func (p *Plan) RotationStep() (Step, bool) {
	if len(p.Steps) > 0 && p.Steps[0].Phase == PhaseRotation {
		return p.Steps[0], true
	}
	return Step{}, false
}

// RollbackStep returns the step that sets the old password back, as step
// index. It needs a built-in rotation step.
func (p *Plan) RollbackStep(index int) (Step, bool) {
	rot, ok := p.RotationStep()
	if !ok {
		return Step{}, false
	}
	r := *rot.Rotation
	r.Rollback = true
	rot.Index, rot.Phase, rot.Rotation = index, PhaseRollback, &r
	rot.Script.Name = "rollback-" + r.Kind
	rot.Script.Title = strings.Replace(rot.Script.Title, "Rotate the password", "Set the old password back", 1)
	return rot, true
}

// RerunStep returns step run again as step index.
func (p *Plan) RerunStep(step Step, index int) Step {
	step.Index, step.Phase = index, PhaseRerun
	step.Script.Title += " (re-run)"
	return step
}

// lookupSwitch reads a policy switch on the user, then the resource, then
// the configuration.
func (p *Plan) lookupSwitch(label string, def bool) bool {
	for _, r := range []*inventory.Record{p.User, p.Resource, p.Configuration} {
		if r == nil {
			continue
		}
		if v, ok := r.Switch(label); ok {
			return v
		}
	}
	return def
}
