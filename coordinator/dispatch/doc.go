// Package dispatch runs rotations over JetStream
// (the layout is package messages/layout): for each planned step it builds the Keeper stdin
// payload, publishes the task on its host's subject, waits for the step's
// RotationResult, and publishes rotation and step events for integrations.
//
// Steps run strictly in sequence: step n+1 is published only once step n
// has a result, so the order user → resource → configuration holds across
// hosts. A failed script does not stop the steps after it, unless the PAM
// User's rotation sets stop_on_failure: then every later step is reported
// as not run. A step whose
// host has no worker to pick it up fails at its deadline (pickup timeout +
// script timeout + kill grace) with an error naming the host; the rotation
// never hangs.
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
