package broker

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// User is a NATS user, authenticated by its nkey.
type User struct {
	// NKey is the user's public nkey ("U...").
	NKey string
	// Name says whose key it is, in logs and in Config's comments
	// ("coordinator", "worker gateway-1"). Optional.
	Name string
	// Permissions restrict what the user may publish and subscribe to.
	// Nil gives every right: the coordinator's user.
	Permissions *Permissions
}

// Permissions are the subjects a user may publish to and subscribe to
// (NATS wildcards allowed). Every other subject is denied.
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// ErrNoAuth is returned by SetUsers on a server started without users.
var ErrNoAuth = errors.New("the embedded nats-server was started without users: it cannot admit some")

// WorkerPermissions returns the rights of the NATS user of host's worker:
// what the worker library does, for this host only.
//
// Publish:
//   - $JS.API.CONSUMER.INFO.<tasks stream>.<host consumer>: bind to its
//     consumer;
//   - $JS.API.CONSUMER.MSG.NEXT.<tasks stream>.<host consumer>: pull its
//     tasks;
//   - $JS.API.CONSUMER.UNPIN.<tasks stream>.<host consumer>: hand its
//     host's tasks over at once when it stops (another worker of the host
//     would otherwise wait the consumer's PinnedTTL);
//   - $JS.ACK.<tasks stream>.<host consumer>.> (and the same consumer in
//     the v2 ack format, $JS.ACK.*.*.<stream>.<consumer>.>): ack, nak,
//     term and extend its messages;
//   - <prefix>.results.>: publish results. Not host-scoped: a result's
//     subject names its rotation and step, not its host;
//   - <prefix>.refused.<host>: report the task messages it refused;
//   - $JS.API.STREAM.INFO.KV_<workers bucket> and $KV.<workers
//     bucket>.<host>.*: open the workers bucket and write and delete its
//     own registrations (keys "<host>.<name>");
//   - $JS.API.STREAM.INFO.KV_<started bucket>, $KV.<started bucket>.>,
//     $JS.API.STREAM.MSG.GET.KV_<started bucket> and
//     $JS.API.DIRECT.GET.KV_<started bucket>.$KV.<started bucket>.>: open
//     the started bucket, write and read started markers and first-seen
//     sequences — reads go to the stream's leader (package consistent;
//     a direct get only from a handle bound before serve turned direct
//     reads off). Not host-scoped: their keys are task ids.
//
// Subscribe: <inbox prefix>.> only (envelope.InboxPrefix(host)), where the
// replies to its requests, its pulled tasks and its publish acks arrive.
//
// Everything else is denied: publishing a task, pulling or reading
// another host's consumer, reading or subscribing to results and events,
// the other buckets, creating or deleting streams and consumers.
func WorkerPermissions(subj messages.Subjects, host string) Permissions {
	tasks, consumer := subj.TasksStream(), subj.Consumer(host)
	workers, started := subj.WorkersBucket(), subj.StartedBucket()
	return Permissions{
		Publish: []string{
			"$JS.API.CONSUMER.INFO." + tasks + "." + consumer,
			"$JS.API.CONSUMER.MSG.NEXT." + tasks + "." + consumer,
			"$JS.API.CONSUMER.UNPIN." + tasks + "." + consumer,
			"$JS.ACK." + tasks + "." + consumer + ".>",
			"$JS.ACK.*.*." + tasks + "." + consumer + ".>",
			subj.AllResults(),
			subj.Refused(host),
			"$JS.API.STREAM.INFO.KV_" + workers,
			"$KV." + workers + "." + messages.HostToken(host) + ".*",
			"$JS.API.STREAM.INFO.KV_" + started,
			"$KV." + started + ".>",
			"$JS.API.STREAM.MSG.GET.KV_" + started,
			"$JS.API.DIRECT.GET.KV_" + started + ".$KV." + started + ".>",
		},
		Subscribe: []string{envelope.InboxPrefix(host) + ".>"},
	}
}

// UserOption authenticates a connection as the nkey user kp: the server's
// nonce is signed with the key, which never leaves the process.
func UserOption(kp nkeys.KeyPair) (nats.Option, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("nkey user: %w", err)
	}
	return nats.Nkey(pub, kp.Sign), nil
}

func validUsers(users []User) error {
	seen := map[string]bool{}
	for i, u := range users {
		switch {
		case !nkeys.IsValidPublicUserKey(u.NKey):
			return fmt.Errorf("users[%d] (%s): %q is not a public nkey user (U...)", i, u.Name, u.NKey)
		case seen[u.NKey]:
			return fmt.Errorf("users[%d] (%s): nkey %s is given twice", i, u.Name, u.NKey)
		}
		seen[u.NKey] = true
	}
	return nil
}

func nkeyUsers(users []User) []*server.NkeyUser {
	var out []*server.NkeyUser
	for _, u := range users {
		nu := &server.NkeyUser{Nkey: u.NKey}
		if p := u.Permissions; p != nil {
			nu.Permissions = &server.Permissions{
				// Empty allow lists with a deny of everything: an
				// empty Allow alone would mean "allow all".
				Publish:   subjectPermission(p.Publish),
				Subscribe: subjectPermission(p.Subscribe),
			}
		}
		out = append(out, nu)
	}
	return out
}

func subjectPermission(allow []string) *server.SubjectPermission {
	if len(allow) == 0 {
		return &server.SubjectPermission{Deny: []string{">"}}
	}
	return &server.SubjectPermission{Allow: slices.Clone(allow)}
}

// SetUsers replaces the users of a server started with users (a
// configuration reload): a new user may connect at once; the connections
// of a user no longer listed are closed, and a user's new permissions
// apply to its open connections. It returns ErrNoAuth for a server started
// without users.
func (b *Broker) SetUsers(users []User) error {
	if !b.auth {
		return ErrNoAuth
	}
	if len(users) == 0 {
		return errors.New("set users: the list is empty (the coordinator's user is missing)")
	}
	if err := validUsers(users); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	opts := b.base.Clone()
	opts.Nkeys = nkeyUsers(users)
	if err := b.srv.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload the embedded nats-server's users: %w", err)
	}
	return nil
}

// Config renders users as the authorization block of a nats-server
// configuration file, for an external cluster: the same users and
// permissions the embedded server enforces.
func Config(users []User) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		if u.Name != "" {
			fmt.Fprintf(&b, "    # %s\n", comment(u.Name))
		}
		if u.Permissions == nil {
			fmt.Fprintf(&b, "    {nkey: %s}\n", strconv.Quote(u.NKey))
			continue
		}
		fmt.Fprintf(&b, "    {\n      nkey: %s\n      permissions: {\n", strconv.Quote(u.NKey))
		for _, dir := range []struct {
			name  string
			allow []string
		}{{"publish", u.Permissions.Publish}, {"subscribe", u.Permissions.Subscribe}} {
			if len(dir.allow) == 0 {
				fmt.Fprintf(&b, "        %s: {deny: [\">\"]}\n", dir.name)
				continue
			}
			fmt.Fprintf(&b, "        %s: {allow: [\n", dir.name)
			for _, s := range dir.allow {
				fmt.Fprintf(&b, "          %s\n", strconv.Quote(s))
			}
			b.WriteString("        ]}\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// comment keeps the printable ASCII of s, for a one-line comment.
func comment(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}
