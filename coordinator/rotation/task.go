package rotation

import (
	"fmt"
	"slices"
	"time"

	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/payload"
)

// buildTask builds the task of one step of r, created at now and expiring
// pickup later: the Keeper stdin payload of a script, the two passwords of
// a built-in rotation, the machine's connection and admin credential.
func buildTask(r Rotation, step plan.Step, now time.Time, pickup time.Duration) (messages.Task, error) {
	secret, rotation, err := taskSecret(r, step)
	if err != nil {
		return messages.Task{}, err
	}
	var conn *messages.Connection
	if step.Target != "" {
		if conn, secret.Credential, err = connection(r.Plan, step); err != nil {
			return messages.Task{}, err
		}
	}
	var req *messages.Request
	if h := step.Script.HTTP; h != nil {
		req = &messages.Request{Method: h.Method, URL: h.URL, Headers: h.Headers, Body: h.Body, ExpectStatus: h.ExpectStatus}
	}
	return messages.Task{
		SchemaVersion: messages.SchemaVersion,
		ID:            fmt.Sprintf("%s-%d", r.ID, step.Index),
		RotationID:    r.ID,
		Step:          step.Index,
		Host:          step.Host,
		Runner:        step.Runner,
		Target:        step.Target,
		RecordUID:     step.RecordUID,
		Script: messages.Script{
			Name:             step.Script.Name,
			Title:            step.Script.Title,
			Command:          step.Script.Command,
			Content:          step.Script.Content,
			TimeoutMS:        step.Script.Timeout.Milliseconds(),
			RetryOnInterrupt: step.Script.RetryOnInterrupt,
		},
		Connection: conn,
		Request:    req,
		Rotation:   rotation,
		CreatedAt:  now,
		ExpiresAt:  now.Add(pickup),
		Secret:     secret,
	}, nil
}

// taskSecret returns what a step's task carries in its secret: for a
// built-in rotation the two passwords (swapped for a rollback) and what it
// changes, for a script its Keeper payload; with the strings to mask in
// any output.
func taskSecret(r Rotation, step plan.Step) (*messages.TaskSecret, *messages.Rotation, error) {
	if step.Runner == plan.RunnerRotate {
		secret := &messages.TaskSecret{NewPassword: r.NewPassword, OldPassword: r.OldPassword, Mask: slices.Concat([]string{r.NewPassword, r.OldPassword}, r.Plan.Secrets())}
		if step.Rotation.Rollback {
			secret.NewPassword, secret.OldPassword = r.OldPassword, r.NewPassword
		}
		rotation := &messages.Rotation{Kind: step.Rotation.Kind, Login: r.Plan.User.Login(), Database: step.Rotation.Database, SSLMode: step.Rotation.SSLMode, Rollback: step.Rotation.Rollback}
		return secret, rotation, nil
	}
	in := r.Plan.Input(step, r.NewPassword, r.OldPassword)
	params, err := payload.Build(in)
	if err != nil {
		return nil, nil, fmt.Errorf("build payload: %w", err)
	}
	stdin, err := params.Encode()
	if err != nil {
		return nil, nil, fmt.Errorf("encode payload: %w", err)
	}
	// params.Secrets adds the records blob and the whole line: a script
	// echoing its input must not leak the secrets inside them.
	return &messages.TaskSecret{Stdin: stdin, Mask: slices.Concat(in.Secrets(), r.Plan.Secrets(), params.Secrets())}, nil, nil
}

// connection returns how the gateway reaches the step's machine and the
// machine's admin credential.
func connection(p *plan.Plan, step plan.Step) (*messages.Connection, *messages.Credential, error) {
	m, ok := p.Record(step.Target)
	if !ok || m.Connection == nil {
		return nil, nil, fmt.Errorf("step %d: resource %q has no connection", step.Index, step.Target)
	}
	c := m.Connection
	admin, ok := p.Record(c.Admin)
	if !ok {
		return nil, nil, fmt.Errorf("step %d: resource %q: no admin record %q", step.Index, m.UID, c.Admin)
	}
	cred := &messages.Credential{Login: admin.Login(), Password: admin.Password()}
	cred.PrivateKey, cred.Passphrase = admin.PrivateKey()
	if cred.Login == "" || (cred.Password == "" && cred.PrivateKey == "") {
		return nil, nil, fmt.Errorf("step %d: admin record %q of %q needs a login and a password or private key", step.Index, admin.UID, m.UID)
	}
	return &messages.Connection{
		Protocol: c.Protocol, Host: c.Host, Port: c.Port, HTTPS: c.HTTPS,
		KnownHosts: string(c.KnownHostsData), HostKey: c.HostKey, CACert: string(c.CACertData),
		InsecureIgnoreHostKey: c.InsecureIgnoreHostKey,
	}, cred, nil
}
