// Package layout is postrotate's JetStream layout (DESIGN §6): every stream,
// consumer and key-value bucket with its subjects, in one place that the
// coordinator (which creates them) and the worker (and its tests) import.
package layout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/consistent"
)

// Layout is the stream and consumer configuration. A zero field means its
// default.
type Layout struct {
	Subjects messages.Subjects
	// Replicas of every stream. Defaults to 1; use 3 on a cluster.
	Replicas int
	// Storage of the streams. Defaults to file storage.
	Storage jetstream.StorageType
	// ResultsMaxAge is how long results and events are kept. Defaults to 30 days.
	ResultsMaxAge time.Duration
	// AckWait is how long a worker may hold a task without an ack or an
	// InProgress before it is redelivered. Defaults to 30s.
	AckWait time.Duration
	// MaxDeliver caps deliveries of one task. Defaults to 5.
	MaxDeliver int
	// DuplicateWindow is the window in which a second copy of a task or a
	// result (same message id) is dropped. Defaults to 1h.
	DuplicateWindow time.Duration
	// PinnedTTL is how long a host's pinned worker may go without pulling
	// before another worker of the host takes over. Defaults to 30s.
	PinnedTTL time.Duration
	// WorkerTTL is how long a worker's registration lives without a
	// heartbeat. Defaults to 30s.
	WorkerTTL time.Duration
}

func (l Layout) WithDefaults() Layout {
	if l.Replicas == 0 {
		l.Replicas = 1
	}
	if l.ResultsMaxAge == 0 {
		l.ResultsMaxAge = 30 * 24 * time.Hour
	}
	if l.AckWait == 0 {
		l.AckWait = 30 * time.Second
	}
	if l.MaxDeliver == 0 {
		l.MaxDeliver = 5
	}
	if l.DuplicateWindow == 0 {
		l.DuplicateWindow = time.Hour
	}
	if l.PinnedTTL == 0 {
		l.PinnedTTL = 30 * time.Second
	}
	if l.WorkerTTL == 0 {
		l.WorkerTTL = 30 * time.Second
	}
	return l
}

// Streams returns the configurations of the tasks, results and events
// streams. The results stream also holds the refusals of task messages that
// are not the coordinator's (messages.Subjects.Refused), for integrations.
func (l Layout) Streams() []jetstream.StreamConfig {
	l = l.WithDefaults()
	s := l.Subjects
	return []jetstream.StreamConfig{
		{
			Name:        s.TasksStream(),
			Description: "postrotate tasks, one subject per host",
			Subjects:    []string{s.AllTasks()},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     l.Storage,
			Replicas:    l.Replicas,
			Duplicates:  l.DuplicateWindow,
			Discard:     jetstream.DiscardNew,
		},
		{
			Name:        s.ResultsStream(),
			Description: "postrotate RotationResults, one subject per rotation step, and the task messages workers refused",
			Subjects:    []string{s.AllResults(), s.AllRefused()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     l.Storage,
			Replicas:    l.Replicas,
			MaxAge:      l.ResultsMaxAge,
			Duplicates:  l.DuplicateWindow,
		},
		{
			Name:        s.EventsStream(),
			Description: "postrotate rotation and step events",
			Subjects:    []string{s.AllEvents()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     l.Storage,
			Replicas:    l.Replicas,
			MaxAge:      l.ResultsMaxAge,
		},
	}
}

// Consumer returns the configuration of host's durable task consumer:
// explicit acks and one task in flight, so a host runs its tasks in order;
// the pinned-client priority policy, so of two workers started for one host
// only one receives tasks (the other takes over PinnedTTL after the first
// stops pulling).
func (l Layout) Consumer(host string) jetstream.ConsumerConfig {
	l = l.WithDefaults()
	return jetstream.ConsumerConfig{
		Durable:        l.Subjects.Consumer(host),
		Description:    "tasks of host " + host,
		FilterSubject:  l.Subjects.Tasks(host),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        l.AckWait,
		MaxDeliver:     l.MaxDeliver,
		MaxAckPending:  1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		Replicas:       l.Replicas,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{messages.PriorityGroup},
		PinnedTTL:      l.PinnedTTL,
	}
}

// Buckets returns the configurations of the KV buckets: rotation runs,
// worker registrations (entries expire without heartbeats) and "script
// started" markers.
func (l Layout) Buckets() []jetstream.KeyValueConfig {
	l = l.WithDefaults()
	s := l.Subjects
	return []jetstream.KeyValueConfig{
		{Bucket: s.RunsBucket(), Description: "postrotate rotation runs and per-user locks", History: 1, Storage: l.Storage, Replicas: l.Replicas},
		{Bucket: s.WorkersBucket(), Description: "postrotate workers: registrations refreshed by heartbeats", TTL: l.WorkerTTL, Storage: l.Storage, Replicas: l.Replicas},
		{Bucket: s.StartedBucket(), Description: "postrotate: tasks whose script a worker started", TTL: l.ResultsMaxAge, Storage: l.Storage, Replicas: l.Replicas},
	}
}

// Setup creates or updates the streams and KV buckets.
func (l Layout) Setup(ctx context.Context, js jetstream.JetStream) error {
	for _, cfg := range l.Streams() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range l.Buckets() {
		if _, err := consistent.KeyValue(ctx, js, cfg); err != nil {
			return fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// EnsureHosts creates or updates the task consumer of every host.
func (l Layout) EnsureHosts(ctx context.Context, js jetstream.JetStream, hosts ...string) error {
	var errs []error
	for _, h := range hosts {
		if _, err := js.CreateOrUpdateConsumer(ctx, l.Subjects.TasksStream(), l.Consumer(h)); err != nil {
			errs = append(errs, fmt.Errorf("create consumer of host %q: %w", h, err))
		}
	}
	return errors.Join(errs...)
}
