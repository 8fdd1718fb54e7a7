// Package worker is postrotate's agent: it binds to the durable pull
// consumer of its host's tasks, runs them one at a time in order with an
// executor, keeps the task alive with InProgress while the script runs,
// publishes the RotationResult and only then acknowledges the task.
//
// # Registration
//
// While it runs, a worker keeps a [messages.WorkerInfo] in the workers KV
// bucket under [messages.WorkerKey]: it is written at Start and refreshed
// every [Options.HeartbeatEvery]. The bucket's TTL makes a dead worker's
// entry disappear; a graceful [Worker.Stop] deletes it once the running
// task is reported. A failed heartbeat (no bucket yet, broker unreachable)
// is logged and tried again at the next tick; it never stops the worker.
//
// # Verified tasks
//
// A worker started with [Options.Trust] (the coordinator's public keys and
// its own curve key, from its credentials) accepts a task message only
// when, in this order:
//
//   - its headers carry a signature by the coordinator's key over the exact
//     message data (unsigned, signed by another key, or changed by one
//     byte: refused);
//   - it decodes to a valid task for this host;
//   - its secret is sealed (a secret in clear is refused) and opens with
//     this worker's curve key as sealed by the coordinator (sealed for
//     another worker: refused);
//   - it is not a replay: the stream sequence of the first message a task
//     id arrived in is kept in the started bucket ("seen.<task id>"); a
//     redelivery of that message is fine, the same task in another message
//     (a copy published again) is refused.
//
// Such a message is not the coordinator's task for this worker: nothing
// runs, it is terminated with the reason, and a "refused" RotationResult
// (Error "refused: <reason>", the rotation and step it claims) is published
// on [messages.Subjects.Refused] — not on the step's subject, so that a
// forged task cannot pre-empt the result of the real step — with message
// id [messages.RefusedMsgID] of its stream sequence. Each is logged at warn
// with the reason, never the content.
//
// Without Trust, tasks are not verified and their secrets travel in clear:
// for tests and trusted networks only; Start logs a warning.
//
// # Started markers
//
// Delivery is at least once, so before starting a script the worker writes
// a marker, keyed by the task id, in the started KV bucket (who started it,
// when, at which delivery); once the result is published it records that
// too. A delivery then finds one of:
//
//   - no marker: nothing started the script (a worker that crashed before
//     starting it, or the first delivery). The marker is written and the
//     script runs, once.
//   - a marker of a reported run: the result is already published (the ack
//     was lost); the task is only acknowledged.
//   - a marker without a report: an earlier delivery started the script and
//     its outcome is unknown (its worker was killed mid-script). The script
//     runs again only when the attachment says retry_on_interrupt and the
//     task has not expired; otherwise the task is refused "in doubt".
//   - the marker cannot be read or written (the bucket is missing or
//     unreachable): nothing runs and nothing is published; the task is
//     nak'd to be delivered again after [Options.NakDelay]. A script never
//     starts without its marker.
//
// # Outcomes
//
// Every task ends in exactly one of these, decided in one place
// ([Worker.handle], with [Worker.decide] for the markers):
//
//   - run: the script ran (whatever its exit status); its result is
//     published, then the task is acknowledged (double ack).
//   - refused: the task is expired, meant for another host, asks for a
//     runner this worker does not have, or is in doubt (see above); a
//     failed result saying why is published and the task is acknowledged,
//     without running anything.
//   - refused as not the coordinator's (with Trust, see above): a refusal
//     is published on the refused subject and the message is terminated.
//   - retried: its started marker is unavailable; the task is nak'd with a
//     delay. MaxDeliver bounds how often.
//   - undecodable: the message is not a valid task; it is terminated with a
//     reason (never redelivered) and, when its rotation and step can be
//     read, a failed result is published.
//
// A worker never logs stdin, output or any secret.
package worker
