package rotation

import "github.com/postrotate/postrotate/coordinator/plan"

// verdict is what the steps that ran say, as far as the policy cares.
type verdict struct {
	// general: the rotation has a built-in step that changes the password
	// (not scripts_only, not a NOOP user).
	general bool
	// rotationFailed: the built-in rotation failed (its scripts were not
	// run).
	rotationFailed bool
	// failed counts the scripts that still failed after any re-run.
	failed int
	// stopped: a script failed and stop_on_failure skipped the rest.
	stopped bool
	// cutShort: the rotation could not go on (it is resumed).
	cutShort bool
}

// decision is what the policy makes of a verdict: the effect, a note for
// people, and, when the old password is to be set back, why.
type decision struct {
	effect         Effect
	note           string
	mayHaveChanged bool
	rollback       string // non-empty: roll back, for this reason
}

// decide applies Keeper's rules to a rotation's verdict:
//   - scripts_only (and NOOP) takes effect only when every script succeeds;
//   - a failed built-in rotation is rolled back with Rollback On Password
//     Fail (on by default); without it the resource may hold the new
//     password;
//   - a script that still fails rolls the password back only with
//     Rollback On Post Rotation Fail; without it the password stays
//     changed.
//
// A rotation cut short takes no effect now; its note ends with the cause,
// which the caller appends.
func decide(v verdict, pol plan.Policy) decision {
	switch {
	case v.cutShort:
		return decision{effect: EffectNotCommitted, note: "the rotation was cut short: "}
	case !v.general && v.failed > 0:
		return decision{effect: EffectNotCommitted, note: "a script failed: in scripts_only mode the rotation takes effect only when every script succeeds"}
	case !v.general && v.stopped:
		return decision{effect: EffectNotCommitted, note: "a script failed (stop_on_failure)"}
	case !v.general:
		return decision{effect: EffectCommitted, note: "every script succeeded"}
	case v.rotationFailed && pol.RollbackOnPasswordFail:
		return decision{rollback: "the password rotation failed"}
	case v.rotationFailed:
		return decision{effect: EffectNotCommitted, mayHaveChanged: true,
			note: "the password rotation failed and Rollback On Password Fail is off: the resource may hold the new password, which is kept in the history"}
	case v.failed > 0 && pol.RollbackOnPostRotationFail:
		return decision{rollback: "a post-rotation script failed"}
	case v.failed > 0:
		return decision{effect: EffectCommitted, note: "the password was changed; a post-rotation script failed (Rollback On Post Rotation Fail is off)"}
	default:
		return decision{effect: EffectCommitted, note: "the password was changed and every script succeeded"}
	}
}
