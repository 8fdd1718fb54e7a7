// Package brokertest starts the embedded broker for tests.
package brokertest

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/broker"
)

// JetStream starts an embedded broker with opts (its store in a fresh test
// directory unless opts.StoreDir is set) and returns a JetStream client on
// an in-process connection, and the broker. Both are closed when the test
// ends.
func JetStream(tb testing.TB, opts broker.Options) (jetstream.JetStream, *broker.Broker) {
	tb.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = tb.TempDir()
	}
	b, err := broker.Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Shutdown)
	nc, err := b.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js, b
}
