// Package schedule fires the scheduled rotations of PAM Users exactly once,
// however many coordinators share one NATS.
//
// Every `postrotate serve` process runs a [Scheduler] over the same JetStream
// KV bucket ([messages.Subjects.SchedulesBucket]). The schedulers elect one
// leader through a lease; only the leader fires. A schedule missed while no
// coordinator ran fires once when one starts again, for the latest missed
// slot, not once per missed slot.
//
// # Lease
//
// The key "leader" holds the lease: the holder's id and when the lease
// expires, both by the scheduler's [Clock]. A scheduler takes a free lease
// with a create, an expired one with an update at the revision it read, and
// renews its own every LeaseTTL/3 with an update at the revision it wrote. A
// renewal that finds another revision, or that cannot reach NATS before the
// lease expires, ends the leadership: the scheduler stops firing at once. A
// scheduler that stops releases its lease, so another one takes over at its
// next check instead of after the lease expires.
//
// Each scheduler reads the expiry with its own clock: the coordinators'
// clocks should agree to well within LeaseTTL. A larger skew makes the
// leadership change hands early, never fires a slot twice (see below).
//
// # Per-user state
//
// The key "user.<token>" (the user's uid encoded by [messages.HostToken])
// holds the user's schedule, when the scheduler first saw that schedule
// (since), the last slot fired and when it was fired. A user seen for the
// first time, or whose schedule changed, is first due at Next(since): a new
// schedule never fires for a slot before it was set.
//
// # Exactly once
//
// When a user is due, the leader first records the slot with a
// compare-and-set at the revision it last read, and calls Options.Fire only
// when that write succeeded. Two schedulers that both believe they lead (a
// lease that expired while its holder was paused) therefore cannot fire the
// same slot twice: the second write fails on the revision the first one
// made. The price is at most once rather than at least once for a
// coordinator killed between the write and Fire: that slot is lost, and the
// next one fires as usual.
//
// All the slots missed since the last one fired collapse into one: the
// latest slot that is due. Fire errors are logged and the slot still counts
// as fired, unless the error wraps [ErrRetry]: then the slot is released and
// tried again at the next tick.
package schedule
