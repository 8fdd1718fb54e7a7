package plan

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/payload"
)

func scripts(names ...string) []inventory.Script {
	out := make([]inventory.Script, len(names))
	for i, n := range names {
		out[i] = inventory.Script{File: "scripts/" + n, Name: n, Title: n}
	}
	return out
}

func field(typ, value string) inventory.Field { return inventory.Field{Type: typ, Value: value} }

// fleet is an inventory with every kind of resource; tests pick a user.
func fleet() *inventory.Inventory {
	user := func(uid, resource string, s ...string) inventory.Record {
		return inventory.Record{
			UID: uid, Type: inventory.TypeUser, Title: uid,
			Fields:   []inventory.Field{field("login", uid+"-login"), field("password", uid+"-old")},
			Scripts:  scripts(s...),
			Rotation: &inventory.Rotation{Type: inventory.RotationGeneral, Resource: resource, Configuration: "cfg"},
		}
	}
	withRecords := func(r inventory.Record, uids ...string) inventory.Record {
		r.Scripts[0].Records = uids
		return r
	}
	return &inventory.Inventory{Version: 1, Records: []inventory.Record{
		{UID: "cfg", Type: inventory.TypeConfiguration, Gateway: "gw-1", Scripts: scripts("cfg-1.sh", "cfg-2.sh"),
			Fields: []inventory.Field{{Type: "secret", Label: "apiKey", Value: "cfg-key"}}},
		{UID: "cfg-bare", Type: inventory.TypeConfiguration, Gateway: "gw-2"},
		{UID: "m-worker", Type: inventory.TypeMachine, Worker: "host-m", Scripts: scripts("m-1.sh", "m-2.sh")},
		{UID: "m-ssh", Type: inventory.TypeMachine, Scripts: scripts("ssh.sh"),
			Connection: &inventory.Connection{Protocol: "ssh", Host: "10.0.0.5", Port: 22, Admin: "admin"}},
		{UID: "m-winrm", Type: inventory.TypeMachine, Scripts: scripts("win.ps1"),
			Connection: &inventory.Connection{Protocol: "winrm", Host: "10.0.0.6", Port: 5985, Admin: "admin"}},
		{UID: "m-empty", Type: inventory.TypeMachine},
		{UID: "db", Type: inventory.TypeDatabase, Scripts: scripts("db.sh")},
		{UID: "dir", Type: inventory.TypeDirectory, Scripts: scripts("dir.sh")},
		{UID: "admin", Type: "login", Fields: []inventory.Field{field("login", "root"), field("password", "admin-pw")}},
		{UID: "cred-a", Type: "login", Fields: []inventory.Field{field("password", "cred-a-pw"), field("url", "http://a")}},
		{UID: "cred-b", Type: "login", Fields: []inventory.Field{{Type: "text", Label: "token", Value: "cred-b-token", Secret: true}}},
		user("u-worker", "m-worker", "u-1.sh", "u-2.sh"),
		user("u-ssh", "m-ssh"),
		user("u-winrm", "m-winrm", "u.sh"),
		user("u-db", "db", "u.sh"),
		user("u-dir", "dir"),
		user("u-empty", "m-empty"),
		withRecords(user("u-creds", "db", "u.sh"), "cred-b", "cred-a"),
		{UID: "u-none", Type: inventory.TypeUser, Scripts: scripts("x.sh"),
			Rotation: &inventory.Rotation{Type: inventory.RotationScriptsOnly, Configuration: "cfg"}},
		{UID: "u-norot", Type: inventory.TypeUser},
	}}
}

type stepWant struct {
	phase  Phase
	record string
	script string
	host   string
	runner string
	target string
}

// orderCase is the steps and hosts planned for a user of fleet.
type orderCase struct {
	user  string
	steps []stepWant
	hosts []string
}

var orderCases = []orderCase{
	{
		user: "u-worker",
		steps: []stepWant{
			{PhaseRotation, "u-worker", "rotate-linux", "host-m", RunnerRotate, ""},
			{PhaseUser, "u-worker", "u-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseUser, "u-worker", "u-2.sh", "gw-1", RunnerLocal, ""},
			{PhaseResource, "m-worker", "m-1.sh", "host-m", RunnerLocal, ""},
			{PhaseResource, "m-worker", "m-2.sh", "host-m", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"host-m", "gw-1"},
	},
	{
		user: "u-ssh",
		steps: []stepWant{
			{PhaseRotation, "u-ssh", "rotate-linux", "gw-1", RunnerRotate, "m-ssh"},
			{PhaseResource, "m-ssh", "ssh.sh", "gw-1", RunnerSSH, "m-ssh"},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
	{
		user: "u-winrm",
		steps: []stepWant{
			{PhaseUser, "u-winrm", "u.sh", "gw-1", RunnerLocal, ""},
			{PhaseResource, "m-winrm", "win.ps1", "gw-1", RunnerWinRM, "m-winrm"},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
	{
		user: "u-db",
		steps: []stepWant{
			{PhaseUser, "u-db", "u.sh", "gw-1", RunnerLocal, ""},
			{PhaseResource, "db", "db.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
	{
		user: "u-dir",
		steps: []stepWant{
			{PhaseResource, "dir", "dir.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
	{
		user: "u-empty", // a machine without scripts needs no worker
		steps: []stepWant{
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
	{
		user: "u-none", // no resource
		steps: []stepWant{
			{PhaseUser, "u-none", "x.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-1.sh", "gw-1", RunnerLocal, ""},
			{PhaseConfiguration, "cfg", "cfg-2.sh", "gw-1", RunnerLocal, ""},
		},
		hosts: []string{"gw-1"},
	},
}

func TestNewOrderAndHosts(t *testing.T) {
	t.Parallel()
	for _, tt := range orderCases {
		t.Run(tt.user, func(t *testing.T) {
			t.Parallel()
			p, err := New(fleet(), tt.user)
			if err != nil {
				t.Fatal(err)
			}
			var got []stepWant
			for i, s := range p.Steps {
				if s.Index != i+1 {
					t.Errorf("step %d has Index %d", i, s.Index)
				}
				got = append(got, stepWant{s.Phase, s.RecordUID, s.Script.Name, s.Host, s.Runner, s.Target})
			}
			if !reflect.DeepEqual(got, tt.steps) {
				t.Errorf("steps:\n got %+v\nwant %+v", got, tt.steps)
			}
			if hosts := p.Hosts(); !slices.Equal(hosts, tt.hosts) {
				t.Errorf("Hosts() = %q, want %q", hosts, tt.hosts)
			}
			if p.User.UID != tt.user || p.Configuration.UID != "cfg" {
				t.Errorf("plan records: user %q, configuration %q", p.User.UID, p.Configuration.UID)
			}
		})
	}
}

func TestHostsFirstUseOrder(t *testing.T) {
	t.Parallel()
	p := &Plan{Steps: []Step{{Host: "b"}, {Host: "a"}, {Host: "b"}, {Host: "c"}, {Host: "a"}}}
	if got := p.Hosts(); !slices.Equal(got, []string{"b", "a", "c"}) {
		t.Fatalf("Hosts() = %q", got)
	}
	if got := (&Plan{}).Hosts(); len(got) != 0 {
		t.Fatalf("Hosts() of an empty plan = %q", got)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	broken := func(edit func(inv *inventory.Inventory)) *inventory.Inventory {
		inv := fleet()
		edit(inv)
		return inv
	}
	rec := func(inv *inventory.Inventory, uid string) *inventory.Record {
		r, _ := inv.Record(uid)
		return r
	}
	tests := []struct {
		name string
		inv  *inventory.Inventory
		user string
		want error
	}{
		{"unknown uid", fleet(), "nobody", ErrUnknownRecord},
		{"not a pamUser", fleet(), "admin", ErrNotPAMUser},
		{"configuration is not a pamUser", fleet(), "cfg", ErrNotPAMUser},
		{"no rotation", fleet(), "u-norot", ErrNoRotation},
		{"missing configuration", broken(func(inv *inventory.Inventory) { rec(inv, "u-db").Rotation.Configuration = "gone" }), "u-db", ErrInvalidInventory},
		{"ambiguous configuration", broken(func(inv *inventory.Inventory) { rec(inv, "u-db").Rotation.Configuration = "" }), "u-db", ErrInvalidInventory},
		{"configuration without gateway", broken(func(inv *inventory.Inventory) { rec(inv, "cfg").Gateway = "" }), "u-db", ErrInvalidInventory},
		{"configuration of the wrong type", broken(func(inv *inventory.Inventory) { rec(inv, "u-db").Rotation.Configuration = "db" }), "u-db", ErrInvalidInventory},
		{"missing resource", broken(func(inv *inventory.Inventory) { rec(inv, "u-db").Rotation.Resource = "gone" }), "u-db", ErrInvalidInventory},
		{"resource of the wrong type", broken(func(inv *inventory.Inventory) { rec(inv, "u-db").Rotation.Resource = "admin" }), "u-db", ErrInvalidInventory},
		{"unreachable machine", broken(func(inv *inventory.Inventory) { rec(inv, "m-ssh").Connection = nil }), "u-ssh", ErrInvalidInventory},
		{"missing additional record", broken(func(inv *inventory.Inventory) { rec(inv, "u-creds").Scripts[0].Records = []string{"gone"} }), "u-creds", ErrInvalidInventory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(tt.inv, tt.user)
			if !errors.Is(err, tt.want) || p != nil {
				t.Fatalf("New(%q) = %v, %v; want %v", tt.user, p, err, tt.want)
			}
		})
	}
}

func TestNewDefaultsToTheOnlyConfiguration(t *testing.T) {
	t.Parallel()
	inv := &inventory.Inventory{Version: 1, Records: []inventory.Record{
		{UID: "u", Type: inventory.TypeUser, Rotation: &inventory.Rotation{Type: inventory.RotationScriptsOnly}},
		{UID: "c", Type: inventory.TypeConfiguration, Gateway: "gw", Scripts: scripts("c.sh")},
	}}
	p, err := New(inv, "u")
	if err != nil {
		t.Fatal(err)
	}
	if p.Configuration.UID != "c" || len(p.Steps) != 1 || p.Steps[0].Host != "gw" || p.Resource != nil {
		t.Fatalf("plan = %+v", p)
	}
}

func TestInput(t *testing.T) {
	t.Parallel()
	p, err := New(fleet(), "u-creds")
	if err != nil {
		t.Fatal(err)
	}
	first := p.Steps[0]
	if !slices.Equal(first.Additional, []string{"cred-b", "cred-a"}) {
		t.Fatalf("Additional = %q", first.Additional)
	}
	in := p.Input(first, "new-pw", "u-creds-old")
	checkInputRecords(t, in)
	if in.NewPassword != "new-pw" || in.OldPassword != "u-creds-old" || in.Login != "u-creds-login" {
		t.Fatalf("Input passwords/login = %q %q %q", in.NewPassword, in.OldPassword, in.Login)
	}
	if _, err := payload.Build(in); err != nil {
		t.Fatalf("payload.Build: %v", err)
	}
	// A step without additional records gets none; a plan without resource
	// gives a nil Resource.
	if in := p.Input(p.Steps[1], "n", "o"); len(in.Additional) != 0 {
		t.Fatalf("step 2 Additional = %+v", in.Additional)
	}
	pn, err := New(fleet(), "u-none")
	if err != nil {
		t.Fatal(err)
	}
	if in := pn.Input(pn.Steps[0], "n", ""); in.Resource != nil {
		t.Fatalf("Resource = %+v, want nil", in.Resource)
	}
}

// checkInputRecords checks the records of u-creds' first step's input:
// configuration, resource, user, and the additional records in the order
// the attachment lists them.
func checkInputRecords(t *testing.T, in payload.Input) {
	t.Helper()
	if in.Configuration == nil || in.Configuration.UID != "cfg" || in.Resource == nil || in.Resource.UID != "db" || in.User.UID != "u-creds" {
		t.Fatalf("Input records = %+v", in)
	}
	var extra []string
	for _, r := range in.Additional {
		extra = append(extra, r.UID)
	}
	if !slices.Equal(extra, []string{"cred-b", "cred-a"}) {
		t.Fatalf("Additional records = %q, want in attachment order", extra)
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		user string
		want []string
	}{
		// user, resource, configuration, then the other records by uid.
		{"u-creds", []string{"u-creds-old", "cfg-key", "cred-a-pw", "cred-b-token"}},
		{"u-ssh", []string{"u-ssh-old", "cfg-key", "admin-pw"}},
		{"u-worker", []string{"u-worker-old", "cfg-key"}},
	}
	for _, tt := range tests {
		p, err := New(fleet(), tt.user)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Secrets(); !slices.Equal(got, tt.want) {
			t.Errorf("Secrets() for %s = %q, want %q", tt.user, got, tt.want)
		}
	}
}

// TestPlanFromInventoryFile plans from a parsed inventory file, the way the
// coordinator does.
func TestPlanFromInventoryFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"u.sh", "m.sh", "c.sh"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho "+name+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	doc := `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gateway-1, scripts: [{file: c.sh}]}
  - {uid: web, type: pamMachine, connection: {protocol: ssh, host: web.internal, admin: root}, scripts: [{file: m.sh, timeout: 10s}]}
  - {uid: root, type: login, fields: [{type: login, value: root}, {type: password, value: r00t-pw}]}
  - uid: svc
    type: pamUser
    fields: [{type: login, value: svc}, {type: password, value: svc-old}]
    rotation: {type: general, resource: web}
    scripts: [{file: u.sh, records: [root]}]
`
	inv, err := inventory.Parse([]byte(doc), dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(inv, "svc")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Steps {
		got = append(got, s.RecordUID+"/"+s.Script.Name+"@"+s.Host+"/"+s.Runner+"/"+s.Target+":"+strings.TrimPrefix(string(s.Script.Content), "#!/bin/sh\n"))
	}
	want := []string{
		"svc/rotate-linux@gateway-1/rotate/web:",
		"svc/u.sh@gateway-1/local/:echo u.sh\n",
		"web/m.sh@gateway-1/ssh/web:echo m.sh\n",
		"cfg/c.sh@gateway-1/local/:echo c.sh\n",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("steps:\n got %q\nwant %q", got, want)
	}
	if s := p.Secrets(); !slices.Equal(s, []string{"svc-old", "r00t-pw"}) {
		t.Fatalf("Secrets() = %q", s)
	}
}
