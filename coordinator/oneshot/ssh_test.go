//go:build unix

package oneshot

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
)

// sshInventory returns an inventory whose user's resource is a machine
// reached over SSH (a real sshd on loopback), logged in with the admin
// record's fields, its host key checked against known_hosts.
func sshInventory(srv *sshdtest.Server, adminFields string) string {
	return fmt.Sprintf(`version: 1
records:
  - uid: cfg
    type: pamConfiguration
    title: Config
    gateway: gateway-1
    scripts: [{file: gateway.sh}]
  - uid: db-admin
    type: pamUser
    title: db-01 admin
    fields:
      - {type: login, value: %s}
%s
  - uid: db-01
    type: pamMachine
    title: db-01
    fields:
      - {type: pamHostname, value: {hostName: 127.0.0.1, port: "%d"}}
    connection: {protocol: ssh, host: 127.0.0.1, port: %d, admin: db-admin, known_hosts: known_hosts}
    scripts:
      - {file: remote.sh, title: Remote}
      - {file: remote-fail.sh}
  - uid: svc
    type: pamUser
    title: svc
    fields:
      - {type: login, value: svc}
      - {type: password, value: %s}
    rotation: {type: scripts_only, resource: db-01, configuration: cfg}
`, sshdtest.User, adminFields, srv.Port(), srv.Port(), marker)
}

// Scripts attached to a machine with an ssh connection run on that machine
// as the admin login, through the gateway's worker and the SSH executor,
// with the payload on stdin; the gateway's own script runs locally after.
func TestSSHConnection(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	scripts := map[string]string{
		"remote.sh": "#!/bin/sh\nid -un\nIFS= read -r line\n" +
			"printf '%s' \"$line\" | base64 -d | grep -o -E '\"(user|resource)RecordUid\": ?\"[^\"]*\"' | tr -d ' ' | sort\n",
		"remote-fail.sh": "#!/bin/sh\necho on-target >&2\nexit 7\n",
		"gateway.sh":     "#!/bin/sh\necho gateway\n",
		"known_hosts":    srv.KnownHosts(),
	}
	for name, admin := range map[string]string{
		"Password": "      - {type: password, value: " + strconv.Quote(sshdtest.Password()) + "}",
		"Key":      "      - {type: keyPair, value: {privateKey: " + strconv.Quote(srv.UserKeyPEM) + "}}",
	} {
		t.Run(name, func(t *testing.T) {
			out := rotate(t, fixture{scripts: scripts, yaml: sshInventory(srv, admin)}.load(t))
			if len(out.Results) != 3 {
				t.Fatalf("results: %+v", out.Results)
			}
			remote, fail, gw := out.Results[0], out.Results[1], out.Results[2]
			if !remote.Success || remote.Title != "Remote" || remote.Stdout != sshdtest.User+"\n"+`"resourceRecordUid":"db-01"`+"\n"+`"userRecordUid":"svc"`+"\n" || remote.System != "Linux" {
				t.Errorf("remote step: %+v", remote)
			}
			if fail.Success || fail.ExitCode != 7 || fail.Stderr != "on-target\n" {
				t.Errorf("failing remote step: %+v", fail)
			}
			if !gw.Success || gw.Stdout != "gateway\n" {
				t.Errorf("gateway step: %+v", gw)
			}
			for _, r := range out.Results {
				for _, secret := range []string{marker, sshdtest.Password(), "PRIVATE KEY"} {
					if strings.Contains(fmt.Sprintf("%+v", r), secret) {
						t.Errorf("result of %s holds a secret: %+v", r.Name, r)
					}
				}
			}
		})
	}
}

// A machine whose host key does not match known_hosts is refused: the
// step fails with an error naming the host key, no script runs there, and
// the rotation goes on.
func TestSSHHostKeyMismatchRefused(t *testing.T) {
	t.Parallel()
	srv, other := sshdtest.Start(t), sshdtest.Start(t)
	inv := fixture{
		scripts: map[string]string{
			"remote.sh":      "#!/bin/sh\ntouch /tmp/postrotate-must-not-run\n",
			"remote-fail.sh": "#!/bin/sh\nexit 0\n",
			"gateway.sh":     "#!/bin/sh\necho gateway\n",
			// The other server's key, under this server's address.
			"known_hosts": strings.ReplaceAll(other.KnownHosts(), fmt.Sprintf("]:%d ", other.Port()), fmt.Sprintf("]:%d ", srv.Port())),
		},
		yaml: sshInventory(srv, "      - {type: password, value: "+strconv.Quote(sshdtest.Password())+"}"),
	}.load(t)
	out := rotate(t, inv)
	if len(out.Results) != 3 || out.Failed != 2 || !out.Results[2].Success {
		t.Fatalf("results: %+v", out.Results)
	}
	for _, r := range out.Results[:2] {
		if r.Success || !strings.Contains(strings.ToLower(r.Error), "host key") {
			t.Errorf("step %s: want refused for its host key, got %+v", r.Name, r)
		}
	}
	if strings.Contains(srv.Log(), "Accepted ") {
		t.Errorf("sshd accepted a login despite the host key mismatch:\n%s", srv.Log())
	}
}
