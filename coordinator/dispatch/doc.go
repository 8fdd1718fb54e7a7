// Package dispatch owns postrotate's JetStream layout (DESIGN §6) and runs
// rotations over it: for each planned step it builds the Keeper stdin
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
package dispatch
