package rotate

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/postrotate/postrotate/executor"
)

// chpasswdScript is the fixed script the Linux rotator runs; it holds no
// secret, they all come on its stdin.
//
//go:embed chpasswd.sh
var chpasswdScript []byte

// chpasswdName is the script's file name on the machine it runs on.
const chpasswdName = "postrotate-chpasswd.sh"

// thisMachine is where a Linux rotation without a Target happens.
const thisMachine = "this machine"

// runLinux sets the password with chpasswd, over SSH on the Target or on
// this machine.
func (r *Rotator) runLinux(ctx context.Context, job executor.Job) (executor.Result, error) {
	rot, t := job.Rotation, job.Target
	where := thisMachine
	if t != nil {
		where = net.JoinHostPort(t.Host, strconv.Itoa(cmp.Or(t.Port, 22)))
	}
	res := executor.Result{Command: "chpasswd", System: "Linux", ExitCode: -1}
	prefix := fmt.Sprintf("rotate linux password of %s on %s", rot.Login, where)
	if err := checkUserName("rotation.login", rot.Login); err != nil {
		return notStarted(job, res, fmt.Errorf("rotate linux password on %s: %w", where, err))
	}
	if rot.NewPassword == "" {
		return notStarted(job, res, fmt.Errorf("%s: rotation.new_password: empty: %w", prefix, ErrInvalidPassword))
	}
	if err := checkLine("rotation.new_password", rot.NewPassword, "chpasswd"); err != nil {
		return notStarted(job, res, fmt.Errorf("%s: %w", prefix, err))
	}
	sudoPassword := ""
	if t != nil {
		sudoPassword = t.Password
		if err := checkLine("target.password", sudoPassword, "sudo -S"); err != nil {
			return notStarted(job, res, fmt.Errorf("%s: %w", prefix, err))
		}
	}

	inner := executor.Job{
		RotationID: job.RotationID,
		Step:       job.Step,
		Attempt:    job.Attempt,
		Script: executor.Script{
			Name:    chpasswdName,
			Content: chpasswdScript,
			Command: "/bin/sh",
			Timeout: job.Script.Timeout,
		},
		Stdin:       []byte(sudoPassword + "\n" + rot.Login + ":" + rot.NewPassword + "\n"),
		Secrets:     job.Secrets,
		OutputLimit: job.OutputLimit,
		Target:      t,
		Rotation:    rot,
	}
	var ran executor.Result
	var err error
	if t != nil {
		ran, err = r.ssh.Run(ctx, inner)
	} else {
		ran, err = r.runHere(ctx, inner)
	}
	mask := inner.Masker()
	res.StartedAt, res.FinishedAt = ran.StartedAt, ran.FinishedAt
	res.Stdout, res.StdoutTruncated = ran.Stdout, ran.StdoutTruncated
	res.Stderr, res.StderrTruncated = ran.Stderr, ran.StderrTruncated
	res.TimedOut = ran.TimedOut
	if err != nil {
		return notStarted(job, res, fmt.Errorf("%s: %w", prefix, err))
	}
	res.ExitCode = ran.ExitCode
	switch {
	case ran.Error != "":
		res.Error = mask.Mask(fmt.Sprintf("%s: %s", prefix, ran.Error))
	case ran.ExitCode != 0:
		res.Error = mask.Mask(fmt.Sprintf("%s: exit status %d%s", prefix, ran.ExitCode, lastLine(ran.Stderr)))
	default:
		res.Stdout = mask.Mask(fmt.Sprintf("password of %s changed on %s (linux)", rot.Login, where))
	}
	return res, nil
}

// lastLine returns ": " and the last non-empty line of s, or "".
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return ": " + last
	}
	return ""
}
