// Package rotation is the coordinator's rotation engine and service.
//
// The engine ([Engine]) runs one rotation: plan → steps in order → the
// policy (Keeper's rules: a failed built-in rotation skips the scripts and
// is rolled back with Rollback On Password Fail; a failed script is run
// again with Re-run On Post Rotation Fail and rolls the password back with
// Rollback On Post Rotation Fail; scripts_only and NOOP users take effect
// only when every script succeeds) → an [Outcome] and its [Effect]. It
// builds each step's task (the Keeper stdin payload, the passwords of a
// built-in rotation, the machine's connection) and reaches the workers
// through a [StepRunner], which package dispatch implements over
// JetStream and the tests fake.
//
// The service ([Service]) runs rotations for a long-lived coordinator:
// it plans the rotation and generates its password, takes the user's
// lock, stores the run, stores the new password (sealed, as the record's
// pending password) before any task that carries it is sent, drives the
// engine (resuming a rotation cut short, and those a previous coordinator
// left running), and at the end commits the password or keeps it as
// uncommitted, stores the run finished and releases the lock — each write
// retried until it succeeds — before the rotation's final event is
// published.
package rotation
