package inventory

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/postrotate/postrotate/coordinator/password"
)

var (
	topKeys        = []string{"version", "records"}
	recordKeys     = []string{"uid", "type", "title", "gateway", "worker", "connection", "fields", "scripts", "rotation"}
	connectionKeys = []string{"protocol", "host", "port", "https", "admin", "known_hosts", "host_key", "ca_cert", "insecure_ignore_host_key", "database", "sslmode"}
	fieldKeys      = []string{"type", "label", "value", "secret"}
	scriptKeys     = []string{"file", "http", "name", "title", "command", "records", "timeout", "retry_on_interrupt"}
	httpKeys       = []string{"method", "url", "headers", "body", "expect_status"}
	rotationKeys   = []string{"type", "resource", "configuration", "schedule", "timezone", "complexity", "stop_on_failure"}
	complexityKeys = []string{"length", "upper", "lower", "digits", "special", "special_chars"}

	pamTypes      = []string{TypeConfiguration, TypeMachine, TypeDatabase, TypeDirectory, TypeUser}
	resourceTypes = []string{TypeMachine, TypeDatabase, TypeDirectory}
	rotationTypes = []string{RotationGeneral, RotationIAMUser, RotationScriptsOnly}
)

// Parse decodes and validates an inventory (YAML, or JSON, which is YAML).
// Script files are read relative to dir. An invalid inventory gives a
// *ValidationError listing every problem.
func Parse(data []byte, dir string) (*Inventory, error) {
	root, problem := parseYAML(data)
	if problem != nil {
		return nil, &ValidationError{Problems: []Problem{*problem}}
	}
	d := &decoder{dir: dir}
	inv := d.inventory(root)
	d.checkReferences(inv)
	if err := d.err(); err != nil {
		return nil, err
	}
	return inv, nil
}

func (d *decoder) inventory(doc *yaml.Node) *Inventory {
	inv := &Inventory{Dir: d.dir}
	root := d.rootMapping(doc)
	if root == nil {
		return inv
	}
	top := d.object(root, "", topKeys, false)
	if top == nil {
		return inv
	}
	inv.Version = d.version(top["version"], root)
	items := d.recordItems(top["records"], root)
	inv.Records = make([]Record, len(items))
	d.uidLines = make([]int, len(items))
	for i, n := range items {
		d.uidLines[i] = line(n)
		d.record(n, i, &inv.Records[i])
	}
	return inv
}

// rootMapping returns the document's top mapping, or nil after reporting
// why there is none.
func (d *decoder) rootMapping(doc *yaml.Node) *yaml.Node {
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if isNull(root) {
		d.addf("", line(root), "empty inventory: want version and records")
		return nil
	}
	if r := resolve(root); r == nil || r.Kind != yaml.MappingNode {
		d.addf("", line(root), "the inventory must be a mapping with version and records")
		return nil
	}
	return root
}

// version decodes the format version n, which must be 1; root is the line
// to report a missing version at.
func (d *decoder) version(n, root *yaml.Node) int {
	if isNull(n) {
		d.addf("version", line(root), "required (the only version is 1)")
		return 0
	}
	if r := resolve(n); r == nil || r.Kind != yaml.ScalarNode || r.ShortTag() != "!!int" {
		d.integer(n, "version") // reports the wrong kind
		return 0
	}
	before := len(d.problems.list)
	v := d.integer(n, "version")
	if v != 1 && len(d.problems.list) == before {
		d.addf("version", line(n), "unsupported version %d (the only version is 1)", v)
	}
	return v
}

// recordItems returns the items of the records list n, which must not be
// empty; root is the line to report a missing list at.
func (d *decoder) recordItems(n, root *yaml.Node) []*yaml.Node {
	items := d.list(n, "records")
	if len(items) == 0 {
		if r := resolve(n); r == nil || isNull(r) || r.Kind == yaml.SequenceNode {
			d.addf("records", line(root), "at least one record is required")
		}
	}
	return items
}

func (d *decoder) record(n *yaml.Node, i int, rec *Record) {
	path := index("records", i)
	m := d.object(n, path, recordKeys, false)
	if m == nil {
		if isNull(n) {
			d.addf(path, line(n), "must be a mapping, not null")
		}
		return
	}
	rec.UID = d.recordUID(m, n, path, i)
	rec.Type = d.recordType(m, n, path)
	rec.Title = d.str(m["title"], join(path, "title"))
	if rec.Title == "" {
		rec.Title = rec.UID
	}

	// Where scripts run.
	rec.Gateway = d.gateway(m, n, path, rec.Type)
	rec.Worker = d.worker(m, path, rec.Type)
	if cn, set := m["connection"]; set && !isNull(cn) {
		rec.Connection = d.connection(cn, join(path, "connection"))
		d.checkConnectionOwner(rec, cn, path)
	}

	for j, fn := range d.list(m["fields"], join(path, "fields")) {
		rec.Fields = append(rec.Fields, d.field(fn, index(join(path, "fields"), j)))
	}
	d.scripts(m, path, rec)
	if rn, set := m["rotation"]; set && !isNull(rn) {
		rec.Rotation = d.recordRotation(rn, path, rec.Type)
	}
}

// recordUID decodes and checks the uid of record i, noting its line for
// the duplicate check.
func (d *decoder) recordUID(m map[string]*yaml.Node, n *yaml.Node, path string, i int) string {
	uid := d.str(m["uid"], join(path, "uid"))
	if un, ok := m["uid"]; ok {
		d.uidLines[i] = line(un)
	}
	if reason := checkUID(uid); reason != "" {
		d.addf(join(path, "uid"), line(or(m["uid"], n)), "%s", reason)
	}
	return uid
}

// recordType decodes the required type, suggesting the PAM type a
// misspelt one stands for.
func (d *decoder) recordType(m map[string]*yaml.Node, n *yaml.Node, path string) string {
	typ := d.str(m["type"], join(path, "type"))
	if typ == "" {
		d.addf(join(path, "type"), line(or(m["type"], n)), "required (pamConfiguration, pamMachine, pamDatabase, pamDirectory, pamUser, or a plain type such as login)")
		return typ
	}
	if slices.Contains(pamTypes, typ) {
		return typ
	}
	for _, t := range pamTypes {
		if strings.EqualFold(t, typ) {
			d.addf(join(path, "type"), line(m["type"]), "unknown type %q: did you mean %q?", typ, t)
		}
	}
	return typ
}

// gateway decodes the gateway host id, which a pamConfiguration must have
// and no other record may.
func (d *decoder) gateway(m map[string]*yaml.Node, n *yaml.Node, path, recType string) string {
	gateway := d.str(m["gateway"], join(path, "gateway"))
	switch {
	case recType == TypeConfiguration && gateway == "":
		d.addf(join(path, "gateway"), line(or(m["gateway"], n)), "required: the host id of the gateway that runs this configuration's scripts")
	case recType == TypeConfiguration:
		if reason := checkHostID(gateway); reason != "" {
			d.addf(join(path, "gateway"), line(m["gateway"]), "%s", reason)
		}
	case gateway != "":
		d.addf(join(path, "gateway"), line(m["gateway"]), "only a pamConfiguration has a gateway")
	}
	return gateway
}

// worker decodes the worker host id, which only a pamMachine may have.
func (d *decoder) worker(m map[string]*yaml.Node, path, recType string) string {
	worker := d.str(m["worker"], join(path, "worker"))
	if _, set := m["worker"]; set && !isNull(m["worker"]) {
		if recType != TypeMachine {
			d.addf(join(path, "worker"), line(m["worker"]), "only a pamMachine has a worker")
		} else if reason := checkHostID(worker); reason != "" {
			d.addf(join(path, "worker"), line(m["worker"]), "%s", reason)
		}
	}
	return worker
}

// checkConnectionOwner reports a connection (node cn) on a record that may
// not have one, or with the wrong protocol for it.
func (d *decoder) checkConnectionOwner(rec *Record, cn *yaml.Node, path string) {
	switch {
	case rec.Type == TypeDatabase && rec.Connection.Protocol != ProtocolPostgreSQL && rec.Connection.Protocol != "":
		d.addf(join(join(path, "connection"), "protocol"), line(cn), "a pamDatabase's connection is postgresql")
	case rec.Type == TypeMachine && rec.Connection.Protocol == ProtocolPostgreSQL:
		d.addf(join(join(path, "connection"), "protocol"), line(cn), "a pamMachine's connection is ssh or winrm")
	case rec.Type != TypeMachine && rec.Type != TypeDatabase:
		d.addf(join(path, "connection"), line(cn), "only a pamMachine or a pamDatabase has a connection")
	case rec.Worker != "":
		d.addf(join(path, "connection"), line(cn), "a pamMachine has either a worker or a connection, not both")
	}
}

// scripts decodes the record's scripts and reports scripts on a record
// that cannot run them.
func (d *decoder) scripts(m map[string]*yaml.Node, path string, rec *Record) {
	scripts := d.list(m["scripts"], join(path, "scripts"))
	for j, sn := range scripts {
		rec.Scripts = append(rec.Scripts, d.script(sn, index(join(path, "scripts"), j)))
	}
	if len(scripts) == 0 || rec.Type == "" {
		return
	}
	switch {
	case !slices.Contains(pamTypes, rec.Type):
		d.addf(join(path, "scripts"), line(m["scripts"]), "a %s record runs no scripts: attach them to a pamConfiguration, pamMachine, pamDatabase, pamDirectory or pamUser", rec.Type)
	case rec.Type == TypeMachine && rec.Worker == "" && rec.Connection == nil:
		d.addf(join(path, "scripts"), line(m["scripts"]), "a pamMachine with scripts needs a worker (installed on the machine) or a connection (the gateway reaches it over ssh or winrm)")
	}
}

// recordRotation decodes the rotation settings rn of a record, which only
// a pamUser may have: elsewhere it gives nil.
func (d *decoder) recordRotation(rn *yaml.Node, path, recType string) *Rotation {
	refs, defaults := len(d.refs), len(d.defaults)
	rot := d.rotation(rn, join(path, "rotation"))
	if recType == TypeUser {
		return rot
	}
	// Report the misplaced settings once, not their references.
	d.refs, d.defaults = d.refs[:refs], d.defaults[:defaults]
	d.addf(join(path, "rotation"), line(rn), "only a pamUser has rotation settings")
	return nil
}

func or(a, b *yaml.Node) *yaml.Node {
	if a != nil {
		return a
	}
	return b
}

func (d *decoder) connection(n *yaml.Node, path string) *Connection {
	m := d.object(n, path, connectionKeys, false)
	if m == nil {
		return &Connection{}
	}
	c := &Connection{
		Protocol:              d.str(m["protocol"], join(path, "protocol")),
		Host:                  d.str(m["host"], join(path, "host")),
		Port:                  d.integer(m["port"], join(path, "port")),
		HTTPS:                 d.boolean(m["https"], join(path, "https")),
		Admin:                 d.str(m["admin"], join(path, "admin")),
		KnownHosts:            d.str(m["known_hosts"], join(path, "known_hosts")),
		HostKey:               d.str(m["host_key"], join(path, "host_key")),
		CACert:                d.str(m["ca_cert"], join(path, "ca_cert")),
		InsecureIgnoreHostKey: d.boolean(m["insecure_ignore_host_key"], join(path, "insecure_ignore_host_key")),
		Database:              d.str(m["database"], join(path, "database")),
		SSLMode:               d.str(m["sslmode"], join(path, "sslmode")),
	}
	switch c.Protocol {
	case ProtocolSSH:
		d.sshOptions(c, m, path)
	case ProtocolWinRM:
		d.winrmOptions(c, m, path)
	case ProtocolPostgreSQL:
		d.postgresqlOptions(c, m, path)
	case "":
		d.addf(join(path, "protocol"), line(or(m["protocol"], n)), "required: ssh, winrm or postgresql")
	default:
		d.addf(join(path, "protocol"), line(m["protocol"]), "unknown protocol %q: want ssh, winrm or postgresql", c.Protocol)
	}
	if c.Protocol != ProtocolPostgreSQL {
		d.refuseKeys(m, path, "only for postgresql", "database", "sslmode")
	}
	d.checkHost(c, m, n, path)
	d.checkPort(c, m, path)
	if c.Admin == "" {
		d.addf(join(path, "admin"), line(or(m["admin"], n)), "required: the uid of the record with the admin credential")
	} else {
		d.refs = append(d.refs, reference{path: join(path, "admin"), line: line(m["admin"]), uid: c.Admin, kind: refAdmin})
	}
	return c
}

// sshOptions reads the known_hosts file of an ssh connection and reports
// the options ssh does not take.
func (d *decoder) sshOptions(c *Connection, m map[string]*yaml.Node, path string) {
	if c.KnownHosts != "" {
		c.KnownHostsData = d.readScript(c.KnownHosts, join(path, "known_hosts"), line(m["known_hosts"]))
	}
	if c.HTTPS {
		d.addf(join(path, "https"), line(m["https"]), "only for winrm")
	}
	if !isNull(m["ca_cert"]) {
		d.addf(join(path, "ca_cert"), line(m["ca_cert"]), "not for ssh (winrm and postgresql only)")
	}
	if c.InsecureIgnoreHostKey && (c.KnownHosts != "" || c.HostKey != "") {
		d.addf(join(path, "insecure_ignore_host_key"), line(m["insecure_ignore_host_key"]), "conflicts with known_hosts and host_key")
	}
}

// winrmOptions reads the CA file of a winrm connection and reports the
// options winrm does not take.
func (d *decoder) winrmOptions(c *Connection, m map[string]*yaml.Node, path string) {
	if c.CACert != "" {
		c.CACertData = d.readScript(c.CACert, join(path, "ca_cert"), line(m["ca_cert"]))
	}
	d.refuseKeys(m, path, "only for ssh", "known_hosts", "host_key")
}

// postgresqlOptions reads the CA file of a postgresql connection, checks
// its sslmode and reports the options postgresql does not take.
func (d *decoder) postgresqlOptions(c *Connection, m map[string]*yaml.Node, path string) {
	if c.CACert != "" {
		c.CACertData = d.readScript(c.CACert, join(path, "ca_cert"), line(m["ca_cert"]))
	}
	d.refuseKeys(m, path, "not for postgresql", "known_hosts", "host_key", "https", "insecure_ignore_host_key")
	switch c.SSLMode {
	case "", "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		d.addf(join(path, "sslmode"), line(m["sslmode"]), "unknown sslmode %q: want disable, allow, prefer, require, verify-ca or verify-full", c.SSLMode)
	}
}

// refuseKeys reports, with reason, each of keys that m sets.
func (d *decoder) refuseKeys(m map[string]*yaml.Node, path, reason string, keys ...string) {
	for _, k := range keys {
		if !isNull(m[k]) {
			d.addf(join(path, k), line(m[k]), "%s", reason)
		}
	}
}

// checkHost reports a missing host, or one no network name can be.
func (d *decoder) checkHost(c *Connection, m map[string]*yaml.Node, n *yaml.Node, path string) {
	switch {
	case c.Host == "":
		d.addf(join(path, "host"), line(or(m["host"], n)), "required")
	case strings.ContainsFunc(c.Host, unicode.IsSpace) || strings.ContainsFunc(c.Host, unicode.IsControl):
		d.addf(join(path, "host"), line(m["host"]), "must not contain whitespace or control characters")
	}
}

// checkPort reports a port out of range and sets an omitted one to the
// protocol's default.
func (d *decoder) checkPort(c *Connection, m map[string]*yaml.Node, path string) {
	switch {
	case c.Port < 0 || c.Port > 65535 || (c.Port == 0 && !isNull(m["port"])):
		d.addf(join(path, "port"), line(m["port"]), "must be between 1 and 65535 (got %d)", c.Port)
	case c.Port == 0:
		c.Port = defaultPort(c.Protocol, c.HTTPS)
	}
}

// defaultPort is the port of protocol when the connection sets none; 0 for
// an unknown protocol.
func defaultPort(protocol string, https bool) int {
	switch {
	case protocol == ProtocolSSH:
		return 22
	case protocol == ProtocolWinRM && https:
		return 5986
	case protocol == ProtocolWinRM:
		return 5985
	case protocol == ProtocolPostgreSQL:
		return 5432
	}
	return 0
}

func (d *decoder) field(n *yaml.Node, path string) Field {
	m := d.object(n, path, fieldKeys, true)
	if m == nil {
		if isNull(n) {
			d.addf(path, line(n), "must be a mapping, not null")
		}
		return Field{}
	}
	f := Field{
		Type:   d.str(m["type"], join(path, "type")),
		Label:  d.str(m["label"], join(path, "label")),
		Secret: d.boolean(m["secret"], join(path, "secret")),
	}
	if f.Type == "" {
		d.addf(join(path, "type"), line(or(m["type"], n)), "required (login, password, text, pamHostname, ...)")
	}
	if vn, ok := m["value"]; ok {
		asText := f.Secret || slices.Contains(secretFieldTypes, f.Type)
		f.Value = d.value(vn, join(path, "value"), 0, asText)
	}
	return f
}

// httpRequest decodes a declarative HTTP attachment.
func (d *decoder) httpRequest(n *yaml.Node, path string) *HTTPRequest {
	m := d.object(n, path, httpKeys, false)
	if m == nil {
		return &HTTPRequest{}
	}
	h := &HTTPRequest{
		Method: strings.ToUpper(d.str(m["method"], join(path, "method"))),
		URL:    d.str(m["url"], join(path, "url")),
		Body:   d.str(m["body"], join(path, "body")),
	}
	if h.Method == "" {
		h.Method = "POST"
	}
	if !slices.Contains([]string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}, h.Method) {
		d.addf(join(path, "method"), line(m["method"]), "unknown method %q: want GET, POST, PUT, PATCH, DELETE or HEAD", h.Method)
	}
	if h.URL == "" {
		d.addf(join(path, "url"), line(or(m["url"], n)), "required: the request URL (a template over the payload)")
	} else if !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") && !strings.HasPrefix(h.URL, "{{") {
		d.addf(join(path, "url"), line(m["url"]), "must start with http:// or https://")
	}
	if hn := resolve(m["headers"]); !isNull(hn) {
		if hn.Kind != yaml.MappingNode {
			d.addf(join(path, "headers"), line(m["headers"]), "must be a mapping of header names to values, not %s", kindName(hn))
		} else {
			h.Headers = map[string]string{}
			for i := 0; i+1 < len(hn.Content); i += 2 {
				name := hn.Content[i].Value
				h.Headers[name] = d.str(hn.Content[i+1], join(join(path, "headers"), name))
			}
		}
	}
	for i, sn := range d.list(m["expect_status"], join(path, "expect_status")) {
		p := index(join(path, "expect_status"), i)
		if code := d.integer(sn, p); code < 100 || code > 599 {
			d.addf(p, line(sn), "must be an HTTP status between 100 and 599")
		} else {
			h.ExpectStatus = append(h.ExpectStatus, code)
		}
	}
	return h
}

func (d *decoder) script(n *yaml.Node, path string) Script {
	m := d.object(n, path, scriptKeys, false)
	if m == nil {
		if isNull(n) {
			d.addf(path, line(n), "must be a mapping, not null")
		}
		return Script{}
	}
	s := Script{
		File:    d.str(m["file"], join(path, "file")),
		Name:    d.str(m["name"], join(path, "name")),
		Title:   d.str(m["title"], join(path, "title")),
		Command: d.str(m["command"], join(path, "command")),
		// An interrupted script is not run again unless it says it is safe.
		RetryOnInterrupt: d.boolean(m["retry_on_interrupt"], join(path, "retry_on_interrupt")),
	}
	if hn, ok := m["http"]; ok && !isNull(hn) {
		s.HTTP = d.httpRequest(hn, join(path, "http"))
	}
	d.scriptSource(&s, m, n, path)
	if s.Name == "" && s.HTTP != nil {
		s.Name = "http"
	}
	if s.Name == "" {
		s.Name = s.File[strings.LastIndexAny(s.File, `/\`)+1:]
	}
	if s.Title == "" {
		s.Title = s.Name
	}
	s.Timeout = d.scriptTimeout(m["timeout"], join(path, "timeout"))
	s.Records = d.scriptRecords(m["records"], join(path, "records"))
	return s
}

// scriptSource checks that the script is either a file, which it reads,
// or an http request.
func (d *decoder) scriptSource(s *Script, m map[string]*yaml.Node, n *yaml.Node, path string) {
	switch {
	case s.File != "" && s.HTTP != nil:
		d.addf(join(path, "http"), line(m["http"]), "conflicts with file: an attachment is a script file or an http request")
	case s.HTTP != nil:
		if s.Command != "" {
			d.addf(join(path, "command"), line(m["command"]), "only for script files")
		}
	case s.File == "":
		d.addf(join(path, "file"), line(or(m["file"], n)), "required: the script's path, relative to the inventory file (or an http request)")
	default:
		s.Content = d.readScript(s.File, join(path, "file"), line(m["file"]))
	}
}

// scriptTimeout decodes a script's timeout, a Go duration written as a
// string; DefaultScriptTimeout when absent or invalid.
func (d *decoder) scriptTimeout(tn *yaml.Node, path string) time.Duration {
	if isNull(tn) {
		return DefaultScriptTimeout
	}
	r := resolve(tn)
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!str" {
		d.addf(path, line(tn), "must be a Go duration such as 90s or 2m, not %s", kindName(r))
		return DefaultScriptTimeout
	}
	t, err := time.ParseDuration(r.Value)
	switch {
	case err != nil:
		d.addf(path, line(tn), "invalid duration %q: want a Go duration such as 90s or 2m", r.Value)
	case t <= 0:
		d.addf(path, line(tn), "must be greater than zero (got %s)", t)
	default:
		return t
	}
	return DefaultScriptTimeout
}

// scriptRecords decodes the uids of a script's additional records, once
// each, to be checked once every record is known.
func (d *decoder) scriptRecords(n *yaml.Node, path string) []string {
	var uids []string
	seen := make(map[string]int)
	for i, rn := range d.list(n, path) {
		p := index(path, i)
		uid := d.str(rn, p)
		if uid == "" {
			if r := resolve(rn); r != nil && r.Kind == yaml.ScalarNode {
				d.addf(p, line(rn), "empty uid")
			}
			continue
		}
		if first, dup := seen[uid]; dup {
			d.addf(p, line(rn), "record %q listed twice (first at records[%d])", uid, first)
			continue
		}
		seen[uid] = i
		uids = append(uids, uid)
		d.refs = append(d.refs, reference{path: p, line: line(rn), uid: uid, kind: refAdditional})
	}
	return uids
}

// readScript reads a script file, reporting why it cannot be used.
func (d *decoder) readScript(file, path string, ln int) []byte {
	p := file
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.dir, p)
	}
	cause := func(err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	if strings.ContainsRune(file, 0) {
		d.addf(path, ln, "invalid file name")
		return nil
	}
	st, err := os.Stat(p)
	if err != nil {
		d.addf(path, ln, "open %s: %v", file, cause(err))
		return nil
	}
	if !st.Mode().IsRegular() {
		d.addf(path, ln, "%s is not a regular file", file)
		return nil
	}
	if st.Size() > MaxScriptSize {
		d.addf(path, ln, "%s is larger than %d bytes", file, MaxScriptSize)
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		d.addf(path, ln, "open %s: %v", file, cause(err))
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxScriptSize+1))
	switch {
	case err != nil:
		d.addf(path, ln, "read %s: %v", file, cause(err))
		return nil
	case len(data) > MaxScriptSize:
		d.addf(path, ln, "%s is larger than %d bytes", file, MaxScriptSize)
		return nil
	}
	return data
}

func (d *decoder) rotation(n *yaml.Node, path string) *Rotation {
	m := d.object(n, path, rotationKeys, false)
	if m == nil {
		return &Rotation{}
	}
	r := &Rotation{
		Type:          d.str(m["type"], join(path, "type")),
		Resource:      d.str(m["resource"], join(path, "resource")),
		Configuration: d.str(m["configuration"], join(path, "configuration")),
		Schedule:      d.str(m["schedule"], join(path, "schedule")),
		Timezone:      d.str(m["timezone"], join(path, "timezone")),
		StopOnFailure: d.boolean(m["stop_on_failure"], join(path, "stop_on_failure")),
	}
	switch {
	case r.Type == "":
		d.addf(join(path, "type"), line(or(m["type"], n)), "required: general, iam_user or scripts_only")
	case !slices.Contains(rotationTypes, r.Type):
		d.addf(join(path, "type"), line(m["type"]), "unknown rotation type %q: want general, iam_user or scripts_only", r.Type)
	}
	if r.Resource != "" {
		d.refs = append(d.refs, reference{path: join(path, "resource"), line: line(m["resource"]), uid: r.Resource, kind: refResource})
	} else if r.Type == RotationGeneral {
		d.addf(join(path, "resource"), line(or(m["resource"], n)), "required for a general rotation: the pamMachine, pamDatabase or pamDirectory where the password is rotated")
	}
	if r.Configuration != "" {
		d.refs = append(d.refs, reference{path: join(path, "configuration"), line: line(m["configuration"]), uid: r.Configuration, kind: refConfiguration})
	} else {
		d.defaults = append(d.defaults, configDefault{path: join(path, "configuration"), line: line(n), rotation: r})
	}
	loc, err := loadLocation(r.Timezone)
	if err != nil {
		d.addf(join(path, "timezone"), line(m["timezone"]), "%s", strings.TrimPrefix(err.Error(), ErrInvalidSchedule.Error()+": "))
		loc = time.UTC
	}
	if _, err := parseSpec(r.Schedule, loc, r.Timezone != ""); err != nil {
		d.addf(join(path, "schedule"), line(m["schedule"]), "%s", strings.TrimPrefix(err.Error(), ErrInvalidSchedule.Error()+": "))
	}
	if cn, ok := m["complexity"]; ok && !isNull(cn) {
		r.Complexity = d.complexity(cn, join(path, "complexity"))
	}
	r.Complexity = r.Complexity.WithDefaults()
	return r
}

func (d *decoder) complexity(n *yaml.Node, path string) password.Rules {
	m := d.object(n, path, complexityKeys, false)
	if m == nil {
		return password.Rules{}
	}
	rules := password.Rules{
		Length:       d.integer(m["length"], join(path, "length")),
		Upper:        d.integer(m["upper"], join(path, "upper")),
		Lower:        d.integer(m["lower"], join(path, "lower")),
		Digits:       d.integer(m["digits"], join(path, "digits")),
		Special:      d.integer(m["special"], join(path, "special")),
		SpecialChars: d.str(m["special_chars"], join(path, "special_chars")),
	}
	err := rules.Validate()
	if err == nil {
		return rules
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var re *password.RuleError
		if errors.As(e, &re) {
			d.addf(join(path, re.Rule), line(or(m[re.Rule], n)), "%s", re.Reason)
		} else {
			d.addf(path, line(n), "%v", e)
		}
	}
	return rules
}

// checkReferences reports duplicate uids and references to missing or
// wrongly typed records, and fills in omitted rotation configurations.
func (d *decoder) checkReferences(inv *Inventory) {
	byUID, configs := d.indexUIDs(inv)
	for _, ref := range d.refs {
		i, ok := byUID[ref.uid]
		if !ok {
			d.addf(ref.path, ref.line, "no record %q", ref.uid)
			continue
		}
		d.checkReferenceType(ref, inv.Records[i].Type)
	}
	d.fillConfigurations(configs)
}

// indexUIDs returns the index of each record by uid, reporting duplicate
// uids, and the uids of the pamConfiguration records.
func (d *decoder) indexUIDs(inv *Inventory) (byUID map[string]int, configs []string) {
	byUID = make(map[string]int)
	for i, r := range inv.Records {
		if r.UID == "" {
			continue
		}
		if first, dup := byUID[r.UID]; dup {
			d.addf(join(index("records", i), "uid"), d.uidLines[i], "duplicate uid %q (first at records[%d])", r.UID, first)
			continue
		}
		byUID[r.UID] = i
		if r.Type == TypeConfiguration {
			configs = append(configs, r.UID)
		}
	}
	return byUID, configs
}

// checkReferenceType reports a reference to a record of type t that cannot
// play the part the reference gives it.
func (d *decoder) checkReferenceType(ref reference, t string) {
	switch ref.kind {
	case refAdmin:
		if slices.Contains(pamTypes, t) && t != TypeUser {
			d.addf(ref.path, ref.line, "record %q is a %s, not a credential record (pamUser, login, ...)", ref.uid, t)
		}
	case refResource:
		switch {
		case t == TypeConfiguration:
			d.addf(ref.path, ref.line, "record %q is a %s: want a pamMachine, pamDatabase or pamDirectory (name a configuration in configuration)", ref.uid, t)
		case !slices.Contains(resourceTypes, t):
			d.addf(ref.path, ref.line, "record %q is a %s: want a pamMachine, pamDatabase or pamDirectory", ref.uid, t)
		}
	case refConfiguration:
		if t != TypeConfiguration {
			d.addf(ref.path, ref.line, "record %q is a %s: want a pamConfiguration", ref.uid, t)
		}
	case refAdditional:
		// Any record may be given to a script as an additional credential.
	}
}

// fillConfigurations gives the rotations that name no configuration the
// inventory's only one (configs), or reports that there is none to give.
func (d *decoder) fillConfigurations(configs []string) {
	for _, def := range d.defaults {
		switch len(configs) {
		case 1:
			def.rotation.Configuration = configs[0]
		case 0:
			d.addf(def.path, def.line, "required: the inventory has no pamConfiguration")
		default:
			d.addf(def.path, def.line, "required: the inventory has %d pamConfiguration records (%s)", len(configs), strings.Join(configs, ", "))
		}
	}
}

// checkUID returns why uid is not usable, or "".
func checkUID(uid string) string {
	switch {
	case uid == "":
		return "required"
	case len(uid) > MaxUIDLength:
		return fmt.Sprintf("longer than %d bytes", MaxUIDLength)
	case !utf8.ValidString(uid):
		return "not valid UTF-8"
	case strings.ContainsFunc(uid, unicode.IsSpace) || strings.ContainsFunc(uid, unicode.IsControl):
		return fmt.Sprintf("uid %q contains whitespace or control characters", uid)
	case strings.ContainsAny(uid, ".*>/"):
		return fmt.Sprintf("uid %q contains one of . * > / (not allowed in a uid)", uid)
	}
	return ""
}

// checkHostID returns why a gateway or worker host id is not usable, or "".
func checkHostID(id string) string {
	switch {
	case id == "":
		return "must not be empty"
	case len(id) > MaxHostIDLength:
		return fmt.Sprintf("host id longer than %d bytes", MaxHostIDLength)
	case !utf8.ValidString(id):
		return "host id is not valid UTF-8"
	case strings.ContainsFunc(id, unicode.IsSpace) || strings.ContainsFunc(id, unicode.IsControl):
		return fmt.Sprintf("host id %q contains whitespace or control characters", id)
	}
	return ""
}
