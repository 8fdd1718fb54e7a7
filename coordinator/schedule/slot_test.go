package schedule

import (
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/inventory"
)

func mustSchedule(t testing.TB, spec, tz string) inventory.Schedule {
	t.Helper()
	s, err := inventory.ParseSchedule(spec, tz)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stepSchedule is a schedule that is neither an interval nor cron: the
// latest slot is found by walking.
type stepSchedule time.Duration

func (d stepSchedule) Next(t time.Time) time.Time {
	return t.Truncate(time.Duration(d)).Add(time.Duration(d))
}
func (d stepSchedule) String() string { return "steps" }

func TestLatestSlot(t *testing.T) {
	t.Parallel()
	now := utc(2025, 3, 20, 12, 0, 0)
	tests := []struct {
		name       string
		sched      inventory.Schedule
		base, want time.Time
	}{
		{"daily, one slot due", mustSchedule(t, "0 3 * * *", ""), utc(2025, 3, 19, 3, 0, 0), utc(2025, 3, 20, 3, 0, 0)},
		{"daily, ten days missed", mustSchedule(t, "0 3 * * *", ""), utc(2025, 3, 10, 3, 0, 0), utc(2025, 3, 20, 3, 0, 0)},
		{"slot exactly now", mustSchedule(t, "0 12 * * *", ""), utc(2025, 3, 1, 0, 0, 0), now},
		{"every second, ten days missed", mustSchedule(t, "* * * * * *", ""), utc(2025, 3, 10, 0, 0, 0), now},
		{"every second, five years missed", mustSchedule(t, "* * * * * ?", ""), utc(2020, 1, 1, 0, 0, 0), now},
		{"burst each day", mustSchedule(t, "* * 3 * * *", ""), utc(2025, 3, 1, 0, 0, 0), utc(2025, 3, 20, 3, 59, 59)},
		{"time zone", mustSchedule(t, "0 3 * * *", "America/New_York"), utc(2025, 3, 1, 0, 0, 0), utc(2025, 3, 20, 7, 0, 0)},
		{"interval counts from base", mustSchedule(t, "every 90m", ""), utc(2025, 3, 20, 0, 10, 0), utc(2025, 3, 20, 10, 40, 0)},
		{"every minute, ten days missed", mustSchedule(t, "every 1m", ""), utc(2025, 3, 10, 0, 0, 30), utc(2025, 3, 20, 11, 59, 30)},
		{"interval ending now", mustSchedule(t, "every 1h", ""), utc(2025, 3, 20, 10, 0, 0), now},
		{"walk", stepSchedule(time.Hour), utc(2025, 3, 19, 0, 30, 0), now},
	}
	for _, tt := range tests {
		if got := latestSlot(tt.sched, tt.base, now); !got.Equal(tt.want) {
			t.Errorf("%s: latestSlot(%s, %v) = %v, want %v", tt.name, tt.sched, tt.base, got, tt.want)
		}
	}
}

func BenchmarkLatestSlotEverySecondYearsMissed(b *testing.B) {
	s := mustSchedule(b, "* * * * * *", "")
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2025, 3, 20, 12, 0, 0, 0, time.UTC)
	for b.Loop() {
		latestSlot(s, base, now)
	}
}
