package inventory

import (
	"errors"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	t.Parallel()
	from := time.Date(2025, 3, 10, 12, 34, 56, 0, time.UTC) // a Monday
	tests := []struct {
		spec, tz string
		next     time.Time // zero: on demand
		str      string
	}{
		{"", "", time.Time{}, "on demand"},
		{"  ", "Europe/Paris", time.Time{}, "on demand"},
		{"every 24h", "", from.Add(24 * time.Hour), "every 24h0m0s"},
		{"every 90m", "Asia/Tokyo", from.Add(90 * time.Minute), "every 1h30m0s"},
		{"@every 1h", "", from.Add(time.Hour), "every 1h0m0s"},
		{"0 3 * * *", "", time.Date(2025, 3, 11, 3, 0, 0, 0, time.UTC), "cron 0 3 * * * (UTC)"},
		{"0 3 * * *", "Europe/Paris", time.Date(2025, 3, 11, 2, 0, 0, 0, time.UTC), "cron 0 3 * * * (Europe/Paris)"},
		{"30 0 3 * * ?", "", time.Date(2025, 3, 11, 3, 0, 30, 0, time.UTC), "cron 30 0 3 * * ? (UTC)"},
		{"0 0 1 * ?", "", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC), "cron 0 0 1 * ? (UTC)"},
		{"*/15 * * * *", "", time.Date(2025, 3, 10, 12, 45, 0, 0, time.UTC), "cron */15 * * * * (UTC)"},
		{"0 9 * * MON-FRI", "America/New_York", time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC), "cron 0 9 * * MON-FRI (America/New_York)"},
		{"@daily", "", time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC), "cron @daily (UTC)"},
		{"CRON_TZ=Asia/Tokyo 0 3 * * *", "", time.Date(2025, 3, 10, 18, 0, 0, 0, time.UTC), "cron CRON_TZ=Asia/Tokyo 0 3 * * *"},
		{"0 0 29 2 *", "", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC), "cron 0 0 29 2 * (UTC)"},
	}
	for _, tt := range tests {
		s, err := ParseSchedule(tt.spec, tt.tz)
		if err != nil {
			t.Errorf("ParseSchedule(%q, %q): %v", tt.spec, tt.tz, err)
			continue
		}
		if got := s.Next(from); !got.Equal(tt.next) {
			t.Errorf("ParseSchedule(%q, %q).Next = %v, want %v", tt.spec, tt.tz, got, tt.next)
		}
		if got := s.String(); got != tt.str {
			t.Errorf("ParseSchedule(%q, %q).String() = %q, want %q", tt.spec, tt.tz, got, tt.str)
		}
	}
}

func TestParseScheduleRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ spec, tz string }{
		{"every", ""},
		{"every 0s", ""},
		{"every -1h", ""},
		{"every day", ""},
		{"@every 0s", ""},
		{"* * *", ""},
		{"* * * * * * *", ""},
		{"61 * * * *", ""},
		{"0 0 30 2 *", ""},
		{"*/0 * * * *", ""},
		{"@sometimes", ""},
		{"0 3 * * *", "Mars/Olympus"},
		{"0 3 * * *", " UTC"},
		{"CRON_TZ=UTC", ""},
		{"TZ=Nowhere/City 0 3 * * *", ""},
		{"CRON_TZ=UTC 0 3 * * *", "Europe/Paris"},
	} {
		if s, err := ParseSchedule(tt.spec, tt.tz); !errors.Is(err, ErrInvalidSchedule) {
			t.Errorf("ParseSchedule(%q, %q) = %v, %v; want ErrInvalidSchedule", tt.spec, tt.tz, s, err)
		}
	}
}
