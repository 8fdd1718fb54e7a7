// Package inventory loads and validates the inventory file: the declarative
// source of records for a postrotate deployment (design brief §5).
//
// # Format
//
// YAML, or JSON (which is YAML, so problems get line numbers either way):
//
//	version: 1
//	records:
//	  - uid: cfg-local
//	    type: pamConfiguration
//	    gateway: gateway-1          # host id of the gateway running gateway-side scripts
//	    scripts:
//	      - file: scripts/notify.sh # relative to the inventory file
//	  - uid: web-01
//	    type: pamMachine
//	    worker: web-01              # or connection: {protocol: ssh, host: ..., admin: <uid>}
//	    scripts:
//	      - {file: scripts/restart.sh, name: restart.sh}
//	  - uid: svc-user
//	    type: pamUser
//	    fields:
//	      - {type: login, value: svc@example.com}
//	      - {type: password, value: Old-Passw0rd}
//	    rotation:
//	      type: scripts_only        # general | iam_user | scripts_only
//	      resource: web-01
//	      schedule: "0 3 * * *"     # "" on demand, "every 24h", or cron (5 fields, or 6 with seconds)
//	      complexity: {length: 32, upper: 2, lower: 2, digits: 2, special: 2}
//	    scripts:
//	      - {file: scripts/rotate.py, command: python3, records: [api-access], timeout: 2m}
//
// Records of type pamConfiguration, pamMachine, pamDatabase, pamDirectory and
// pamUser have a role in a rotation; any other type (login, ...) is a plain
// record that scripts may receive as an additional credential. A field value
// is a scalar, an object, or a list meaning several values; null or [] is no
// value.
//
// Defaults: a record's title is its uid; a script's name is its file's base
// name, its title its name, its timeout [DefaultScriptTimeout]; an ssh
// connection's port is 22, winrm's 5985 (5986 with https); a rotation without
// configuration uses the inventory's only pamConfiguration; the complexity
// is [password.Rules.WithDefaults]. Script files are read when the inventory
// is loaded, so the records carry their scripts' content.
//
// YAML anchors, aliases and merge keys ("<<") may be used; their expansion is
// bounded.
//
// # Validation
//
// A bad inventory is refused as a whole: [Load] and [Parse] return a
// [*ValidationError] whose Problems name the path of every bad value, e.g.
//
//	records[1].uid: duplicate uid "web-01" (first at records[0]) (line 9)
//	records[3].rotation.resource: no record "nope" (line 31)
//	records[2].scripts[0].file: open scripts/x.sh: no such file or directory (line 20)
//
// Every key is checked (an unknown key is a problem), every reference must
// name a record of the right type, script files must be readable regular
// files, schedules must parse ([ParseSchedule]) and complexities must be
// satisfiable ([password.Rules.Validate]). No message ever contains a field
// value: inside a field, even an unknown key is not shown, in case it is a
// misplaced value. References cannot form cycles: each one points at a
// record of a type that references nothing further.
package inventory
