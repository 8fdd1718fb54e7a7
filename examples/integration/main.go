// Command integration shows how an integration follows postrotate: it reads
// every RotationResult and every rotation event from JetStream with a
// durable consumer of its own, using only the messages module and nats.go.
//
//	go run ./examples/integration --nats nats://127.0.0.1:4222
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS URL of the postrotate deployment")
	name := flag.String("durable", "my-integration", "durable consumer name: survives restarts of this program")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	var subj messages.Subjects // default prefix "postrotate"

	// Results: one message per executed script, on postrotate.results.<rotation>.<step>.
	results, err := js.CreateOrUpdateConsumer(ctx, subj.ResultsStream(), jetstream.ConsumerConfig{
		Durable: *name + "-results", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	rc, err := results.Consume(func(m jetstream.Msg) {
		r, err := messages.DecodeResult(m.Data())
		if err != nil {
			log.Printf("skip %s: %v", m.Subject(), err)
			_ = m.Term()
			return
		}
		if r.WasFailure() {
			fmt.Printf("For record %s, the script %s failed: %s%s\n", r.UID, r.Title, r.Error, r.Stderr)
		} else {
			fmt.Printf("rotation %s step %d: %s ok on %s\n", r.RotationID, r.Step, r.Title, r.Host)
		}
		_ = m.Ack()
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Stop()

	// Rotation events: started, completed, failed.
	events, err := js.CreateOrUpdateConsumer(ctx, subj.EventsStream(), jetstream.ConsumerConfig{
		Durable: *name + "-events", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: subj.RotationEvent("*"),
	})
	if err != nil {
		log.Fatal(err)
	}
	ec, err := events.Consume(func(m jetstream.Msg) {
		var ev messages.RotationEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			_ = m.Term()
			return
		}
		fmt.Printf("rotation %s of %s %s (%d ok, %d failed) %s\n", ev.RotationID, ev.UserRecordUID, ev.Kind,
			ev.Succeeded, ev.Failed, strings.TrimSpace(ev.Error))
		_ = m.Ack()
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ec.Stop()
	<-ctx.Done()
}
