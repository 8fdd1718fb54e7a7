//go:build unix

package app

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/executor/rotate/pgtest"
	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
)

// tellScript writes the new password it was given to the file NEWPW (so
// the test can try it after a rollback), then exits with STATUS.
const tellScript = `import sys, json, base64
p = json.loads(base64.b64decode(sys.stdin.readline()))
open(NEWPW, "w").write(p["newPassword"])
sys.exit(STATUS)
`

// generalCase writes an inventory with the given records (YAML list items)
// under a configuration whose gateway is gw, starts a server and the
// gateway's worker (default executors: the real rotators), and returns the
// server and the directory holding tell-<user>.py scripts' outputs.
func generalCase(t *testing.T, records string, users map[string]int) (*App, string) {
	t.Helper()
	dir := t.TempDir()
	for user, status := range users {
		script := strings.NewReplacer("NEWPW", strconv.Quote(filepath.Join(dir, user+".newpw")), "STATUS", strconv.Itoa(status)).Replace(tellScript)
		if err := os.WriteFile(filepath.Join(dir, "tell-"+user+".py"), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	y := "version: 1\nrecords:\n  - {uid: cfg, type: pamConfiguration, gateway: gw}\n" + records
	if err := os.WriteFile(filepath.Join(dir, "inv.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(filepath.Join(dir, "inv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := startBroker(t)
	s := startServer(t, js, inv, Options{})
	startWorkers(t, s, js, "gw")
	return s, dir
}

// generalUser is a pamUser record rotated with type general on resource,
// its script tell-<uid>.py, and extra fields.
func generalUser(uid, login, password, resource, extraFields string) string {
	return fmt.Sprintf(`  - uid: %[1]s
    type: pamUser
    fields: [{type: login, value: %[2]s}, {type: password, value: %[3]q}%[5]s]
    rotation: {type: general, resource: %[4]s, configuration: cfg}
    scripts: [{file: tell-%[1]s.py, command: /usr/bin/python3}]
`, uid, login, password, resource, extraFields)
}

const rollbackOnScriptFail = `, {type: checkbox, label: Rollback On Post Rotation Fail, value: true}`

func newPasswordTold(t *testing.T, dir, user string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, user+".newpw"))
	if err != nil || len(b) < 16 {
		t.Fatalf("the script of %s did not tell its new password: %v %q", user, err, b)
	}
	return string(b)
}

func revealed(t *testing.T, s *App, uid string) server.RecordView {
	t.Helper()
	var v server.RecordView
	if code := do(t, s.Handler(), "GET", "/v1/records/"+uid+"?reveal=true", "", &v); code != http.StatusOK {
		t.Fatalf("GET /v1/records/%s: %d", uid, code)
	}
	return v
}

// A general rotation of a real Linux account on a machine reached over
// SSH: chpasswd through sudo as the machine's admin. The new password logs
// in and the old one does not, and it is committed; with a failing script
// and Rollback On Post Rotation Fail, the old password is set back.
func TestGeneralRotationLinuxOverSSH(t *testing.T) {
	t.Parallel()
	lx := startLinuxOverSSH(t)
	lx.checkCommitted(t)
	lx.checkRolledBack(t)
}

// The Linux accounts of TestGeneralRotationLinuxOverSSH: the machine's
// admin, one account whose rotation commits, one whose rotation is rolled
// back.
const linuxAdmin, linuxCommitted, linuxRolledBack = "postrotate-adm9", "postrotate-rot9", "postrotate-rot8"

// linuxOverSSH is a coordinator and gateway worker rotating the accounts
// of a real sshd: u-commit (linuxCommitted, its script succeeds) and
// u-rollback (linuxRolledBack, its script fails, Rollback On Post Rotation
// Fail), both with password oldPW at first.
type linuxOverSSH struct {
	srv   *sshdtest.Server
	s     *App
	dir   string // the scripts' tell outputs
	oldPW string
}

// startLinuxOverSSH creates the accounts and starts the sshd, the
// coordinator and its gateway's worker.
func startLinuxOverSSH(t *testing.T) *linuxOverSSH {
	t.Helper()
	srv := sshdtest.Start(t, "AllowUsers "+strings.Join([]string{sshdtest.User, linuxAdmin, linuxCommitted, linuxRolledBack}, " "))
	adminPW, oldPW := "Adm1n-"+vault.NewKey().String()[:12], "0ld-Linux-"+vault.NewKey().String()[:12]
	sshdtest.CreateUser(t, linuxAdmin, adminPW)
	sshdtest.AllowSudo(t, linuxAdmin, false)
	sshdtest.CreateUser(t, linuxCommitted, oldPW)
	sshdtest.CreateUser(t, linuxRolledBack, oldPW)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(srv.KnownHosts()), 0o600); err != nil {
		t.Fatal(err)
	}
	records := fmt.Sprintf(`  - {uid: m-admin, type: pamUser, fields: [{type: login, value: %s}, {type: password, value: %q}]}
  - uid: m
    type: pamMachine
    connection: {protocol: ssh, host: 127.0.0.1, port: %d, admin: m-admin, known_hosts: %s}
`, linuxAdmin, adminPW, srv.Port(), kh) +
		generalUser("u-commit", linuxCommitted, oldPW, "m", "") +
		generalUser("u-rollback", linuxRolledBack, oldPW, "m", rollbackOnScriptFail)
	s, dir := generalCase(t, records, map[string]int{"u-commit": 0, "u-rollback": 1})
	return &linuxOverSSH{srv: srv, s: s, dir: dir, oldPW: oldPW}
}

// checkCommitted rotates u-commit and checks that the new password is
// stored and logs in, and the old one does not.
func (lx *linuxOverSSH) checkCommitted(t *testing.T) {
	t.Helper()
	v := rotateAndWait(t, lx.s, "u-commit")
	if v.Effect != string(rotation.EffectCommitted) || len(v.Results) != 2 || !v.Results[0].Success || v.Results[0].Name != "rotate-linux" {
		t.Fatalf("rotation: %+v", v)
	}
	newPW := newPasswordTold(t, lx.dir, "u-commit")
	if rec := revealed(t, lx.s, "u-commit"); rec.Password != newPW || rec.History[0].Password != lx.oldPW {
		t.Fatalf("record store: password %t, history %+v", rec.Password == newPW, rec.History)
	}
	if !lx.srv.CanLogin(t, linuxCommitted, newPW) || lx.srv.CanLogin(t, linuxCommitted, lx.oldPW) {
		t.Fatalf("after the rotation: the new password must log in, the old one must not")
	}
}

// checkRolledBack rotates u-rollback, whose script fails, and checks that
// the old password is set back, logs in and stays in the record store.
func (lx *linuxOverSSH) checkRolledBack(t *testing.T) {
	t.Helper()
	v := rotateAndWait(t, lx.s, "u-rollback")
	if v.Effect != string(rotation.EffectRolledBack) || len(v.Results) != 3 || v.Results[2].Name != "rollback-linux" || !v.Results[2].Success {
		t.Fatalf("rotation with a failing script: %+v", v)
	}
	newPW := newPasswordTold(t, lx.dir, "u-rollback")
	if !lx.srv.CanLogin(t, linuxRolledBack, lx.oldPW) || lx.srv.CanLogin(t, linuxRolledBack, newPW) {
		t.Fatalf("after the rollback: the old password must log in, the new one must not")
	}
	if rec := revealed(t, lx.s, "u-rollback"); rec.Password != lx.oldPW || rec.Source != vault.SourceInventory {
		t.Fatalf("rolled back record: %+v", rec)
	}
}

// The same with a real PostgreSQL role, rotated from the gateway with the
// database's admin credential.
func TestGeneralRotationPostgreSQL(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	oldPW := "0ld-Pg-" + vault.NewKey().String()[:12]
	pg.CreateRole(t, "svc_commit", oldPW)
	pg.CreateRole(t, "svc_rollback", oldPW)
	records := fmt.Sprintf(`  - {uid: db-admin, type: pamUser, fields: [{type: login, value: %s}, {type: password, value: %q}]}
  - uid: db
    type: pamDatabase
    connection: {protocol: postgresql, host: %s, port: %d, admin: db-admin, sslmode: disable}
`, pg.AdminUser, pg.AdminPassword, pg.Host, pg.Port) +
		generalUser("u-commit", "svc_commit", oldPW, "db", "") +
		generalUser("u-rollback", "svc_rollback", oldPW, "db", rollbackOnScriptFail)
	s, dir := generalCase(t, records, map[string]int{"u-commit": 0, "u-rollback": 1})

	v := rotateAndWait(t, s, "u-commit")
	if v.Effect != string(rotation.EffectCommitted) || len(v.Results) != 2 || v.Results[0].Name != "rotate-postgresql" {
		t.Fatalf("rotation: %+v", v)
	}
	newPW := newPasswordTold(t, dir, "u-commit")
	if !pg.CanLogin(t, "svc_commit", newPW) || pg.CanLogin(t, "svc_commit", oldPW) {
		t.Fatalf("after the rotation: the new password must log in, the old one must not")
	}
	if rec := revealed(t, s, "u-commit"); rec.Password != newPW {
		t.Fatalf("the record store does not hold the new password")
	}

	v = rotateAndWait(t, s, "u-rollback")
	if v.Effect != string(rotation.EffectRolledBack) || len(v.Results) != 3 || !v.Results[2].Success {
		t.Fatalf("rotation with a failing script: %+v", v)
	}
	newPW = newPasswordTold(t, dir, "u-rollback")
	if !pg.CanLogin(t, "svc_rollback", oldPW) || pg.CanLogin(t, "svc_rollback", newPW) {
		t.Fatalf("after the rollback: the old password must log in, the new one must not")
	}
	for _, secret := range []string{newPW, oldPW, pg.AdminPassword} {
		if strings.Contains(pg.Log(), secret) {
			t.Errorf("PostgreSQL's statement log holds a password")
		}
	}
}
