package schedule

import (
	"strings"
	"time"

	"github.com/postrotate/postrotate/coordinator/inventory"
)

// maxSlotSteps bounds the walk from one slot to the next when looking for
// the latest slot due. A schedule with more slots than that between the last
// slot fired and now fires once per tick until it has caught up.
const maxSlotSteps = 100_000

// latestSlot returns the latest slot of sched that is after base and not
// after now. sched.Next(base) must be a slot not after now.
//
// Intervals ("every 90m") count from base: the slot is computed. Cron slots
// do not depend on base: the search starts from a window before now that is
// doubled until it holds a slot, so that a schedule firing every second
// catches up on years at once. Other schedules are walked from base.
func latestSlot(sched inventory.Schedule, base, now time.Time) time.Time {
	first := sched.Next(base)
	if d, ok := fixedInterval(sched, base, first); ok {
		return base.Add(now.Sub(base) / d * d)
	}
	from := base
	if strings.HasPrefix(sched.String(), "cron ") {
		from = cronSearchStart(sched, base, now)
	}
	slot := sched.Next(from)
	for range maxSlotSteps {
		next := sched.Next(slot)
		if next.IsZero() || next.After(now) {
			break
		}
		slot = next
	}
	return slot
}

// fixedInterval returns the interval of an "every <duration>" schedule.
func fixedInterval(sched inventory.Schedule, base, first time.Time) (time.Duration, bool) {
	rest, ok := strings.CutPrefix(sched.String(), "every ")
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d <= 0 || !first.Equal(base.Add(d)) {
		return 0, false
	}
	return d, true
}

// cronSearchStart returns a time after base from which sched has a slot not
// after now, as close to now as doubling windows find; base when there is
// none closer.
func cronSearchStart(sched inventory.Schedule, base, now time.Time) time.Time {
	span := now.Sub(base)
	for w := time.Second; w < span && w > 0; w *= 2 {
		from := now.Add(-w)
		if next := sched.Next(from); !next.IsZero() && !next.After(now) {
			return from
		}
	}
	return base
}
