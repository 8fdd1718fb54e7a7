package natsconn

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestAsViolation(t *testing.T) {
	t.Parallel()
	// As nats.go reports the server's -ERR.
	wrap := func(s string) error { return fmt.Errorf("%w: %s", nats.ErrPermissionViolation, s) }
	for _, tt := range []struct {
		err     error
		ok      bool
		op, sub string
	}{
		{wrap(`Permissions Violation for Publish to "postrotate.tasks.gw"`), true, "publish", "postrotate.tasks.gw"},
		{wrap(`Permissions Violation for Subscription to "postrotate.results.>"`), true, "subscribe", "postrotate.results.>"},
		{wrap(`Permissions Violation for Subscription to "x.>" using queue "q"`), true, "subscribe", "x.>"},
		{wrap(`Permissions Violation for Publish with Reply of "_INBOX.abc"`), true, "publish", "_INBOX.abc"},
		{wrap(`something new`), true, "unknown", ""},
		{errors.New(`Permissions Violation for Publish to "x"`), false, "", ""},
		{nats.ErrConnectionClosed, false, "", ""},
		{nil, false, "", ""},
	} {
		v, ok := AsViolation(tt.err)
		if ok != tt.ok || v.Operation != tt.op || v.Subject != tt.sub {
			t.Errorf("AsViolation(%v) = %+v, %v", tt.err, v, ok)
		}
	}
}
