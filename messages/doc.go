// Package messages holds postrotate's wire types: the Task a coordinator
// publishes for a worker, the RotationResult a worker returns for every script
// it ran, the rotation and step events integrations subscribe to, and the
// NATS subject names they travel on.
//
// It imports only the standard library, so an integration can decode results
// without pulling in NATS, SSH or Docker. Signing tasks and sealing their
// secrets is the business of the subpackage
// [github.com/postrotate/postrotate/messages/envelope] (which needs nkeys).
//
// # RotationResult
//
// [RotationResult] carries Keeper's field names exactly (uid, command, system,
// title, name, success, stdout, stderr) so code written against Keeper's
// gateway reads it unchanged, plus snake_case extensions (rotation_id, step,
// host, worker, exit_code, started_at, finished_at, duration_ms,
// stdout_truncated, stderr_truncated, error). A JSON Schema for it and for the
// events is in the schema directory of this module and embedded as
// [RotationResultSchema] and [EventSchema].
//
// # Subjects
//
// With the default prefix "postrotate":
//
//	postrotate.tasks.<host>                     tasks, stream POSTROTATE_TASKS (WorkQueue)
//	postrotate.results.<rotation>.<step>        results, stream POSTROTATE_RESULTS (Limits)
//	postrotate.refused.<host>                   task messages a worker refused as not the
//	                                            coordinator's (forged, changed, replayed),
//	                                            also in POSTROTATE_RESULTS
//	postrotate.events.rotation.<kind>           rotation started/completed/failed
//	postrotate.events.step.<kind>               step started/completed/failed
//
// A Task carries its secret part sealed (sealed_secret) when the
// coordinator signs tasks: [Task.Validate] accepts it, and the worker calls
// [Task.ValidateSecret] once it has opened it.
//
// Host ids are free-form strings; [HostToken] encodes one into a subject
// token that is safe and reversible ([ParseHostToken]).
//
// # Versioning
//
// Every message carries schema_version. A reader refuses a message whose
// version is newer than [SchemaVersion].
package messages
