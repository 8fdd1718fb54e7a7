// Package dispatch is the NATS side of a rotation: the engine's
// rotation.StepRunner over JetStream (the streams, consumers and buckets
// of package messages/layout). It publishes a step's task on its host's
// subject, waits for the step's RotationResult on the results stream,
// publishes the result the coordinator gives a step that does not run, and
// the rotation and step events integrations read. It also turns the
// MAX_DELIVERIES advisories of the task consumers into failed steps
// (WatchMaxDeliveries) and lists the live workers.
//
// A step whose host has no worker to pick it up fails at its deadline
// (the task's expiry + script timeout + kill grace) with an error naming
// the host; a rotation never hangs. A task no worker has taken by its
// expiry is withdrawn from the queue: it cannot have reached a target.
//
// # Signed tasks
//
// With [Options.Signer] (the coordinator's identity) every task's secret is
// sealed for the curve key enrolled for its host's worker
// ([Options.WorkerKey]) and the published data is signed (headers
// envelope.HeaderSignature and HeaderSigner): the broker never holds a
// secret, and a worker started with credentials runs only what the
// coordinator sent it. A step whose host has no enrolled key fails without
// sending anything. When the worker refuses the very message published for
// a step (reported on its refused subject under that message's sequence),
// the step fails at once with the reason ([RefusedError]); refusals of
// other messages that claim the step are ignored. Without a Signer, tasks
// travel unsigned with their secrets in clear: for tests and trusted
// networks only.
package dispatch
