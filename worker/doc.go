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
//   - retried: its started marker is unavailable; the task is nak'd with a
//     delay. MaxDeliver bounds how often.
//   - undecodable: the message is not a valid task; it is terminated with a
//     reason (never redelivered) and, when its rotation and step can be
//     read, a failed result is published.
//
// A worker never logs stdin, output or any secret.
package worker
