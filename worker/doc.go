// Package worker is postrotate's agent: it binds to the durable pull
// consumer of its host's tasks, runs them one at a time in order with an
// executor, keeps the task alive with InProgress while the script runs,
// publishes the RotationResult and only then acknowledges the task.
//
// # Outcomes
//
// Every task ends in exactly one of these, decided in one place
// ([Worker.handle]):
//
//   - run: the script ran (whatever its exit status); its result is
//     published, then the task is acknowledged (double ack).
//   - refused: the task is expired, meant for another host, asks for a
//     runner this worker does not have, or was delivered again after a
//     first delivery that may have started the script ("in doubt"); a
//     failed result saying why is published and the task is acknowledged,
//     without running anything.
//   - undecodable: the message is not a valid task; it is terminated with a
//     reason (never redelivered) and, when its rotation and step can be
//     read, a failed result is published.
//
// A worker never logs stdin, output or any secret.
package worker
