package rotation

import "github.com/postrotate/postrotate/messages"

// Effect says whether a rotation's new password took effect: what the
// coordinator commits as the user's password.
type Effect string

const (
	// EffectCommitted: the new password is the user's password now (a
	// general rotation changed it, possibly with failed scripts that did
	// not ask for a rollback; a scripts_only rotation whose scripts all
	// succeeded).
	EffectCommitted Effect = "committed"
	// EffectNotCommitted: the rotation did not take effect; the old
	// password stays the user's (a scripts_only rotation with a failed
	// script, a failed built-in rotation without rollback, a rotation cut
	// short).
	EffectNotCommitted Effect = "not_committed"
	// EffectRolledBack: the new password was set, then the old one set
	// back.
	EffectRolledBack Effect = "rolled_back"
	// EffectRollbackFailed: setting the old password back failed: the
	// resource may hold either password. Needs a person.
	EffectRollbackFailed Effect = "rollback_failed"
)

// Outcome is what a rotation produced.
type Outcome struct {
	RotationID string
	// Results has one RotationResult per step run or skipped, in execution
	// order: the planned steps, then re-runs and a rollback when they
	// happened.
	Results   []messages.RotationResult
	Succeeded int
	Failed    int
	// Effect is whether the new password took effect; Note says why, for
	// people.
	Effect Effect
	Note   string
	// Unresolved counts the steps that failed in the end: a script whose
	// re-run succeeded is resolved.
	Unresolved int
	// MayHaveChanged is set when the new password did not take effect but
	// may have reached the resource (a failed built-in rotation without
	// rollback, a failed rollback): it must be kept somewhere a person
	// finds it.
	MayHaveChanged bool
	// StillSet is set when a rollback failed after the built-in rotation
	// succeeded: the resource most likely holds the new password, which
	// is therefore committed although the effect is rollback_failed.
	StillSet bool
	// Sent is set once a task carrying the new password may have left the
	// coordinator (its publish was attempted, or an earlier run — of a
	// previous coordinator, or cut short in this one — began before this
	// one resumed it): a target may hold the new
	// password, so a rotation that does not commit it keeps it as
	// uncommitted. Unset, nothing carried it anywhere.
	Sent bool
	// reached counts the steps whose task may have reached a worker: a
	// task withdrawn from the queue untaken does not count.
	reached int
}

// Commits reports whether the rotation's new password is the user's now:
// it took effect, or a failed rollback most likely left it set.
func (o Outcome) Commits() bool { return o.Effect == EffectCommitted || o.StillSet }

// Success reports whether the rotation took effect and nothing failed in
// the end.
func (o Outcome) Success() bool {
	return o.Effect == EffectCommitted && o.Unresolved == 0
}

func (o *Outcome) add(rr messages.RotationResult) {
	o.Results = append(o.Results, rr)
	if rr.Success {
		o.Succeeded++
	} else {
		o.Failed++
	}
}

// event is the rotation's completed or failed event.
func (o Outcome) event(user, why string) messages.RotationEvent {
	kind := messages.EventCompleted
	if !o.Success() {
		kind = messages.EventFailed
	}
	return messages.RotationEvent{
		Kind: kind, RotationID: o.RotationID, UserRecordUID: user, Steps: len(o.Results),
		Succeeded: o.Succeeded, Failed: o.Failed, Effect: string(o.Effect), Error: why,
	}
}
