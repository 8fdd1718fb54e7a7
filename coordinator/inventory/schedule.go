package inventory

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // IANA zones even on hosts without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// ErrInvalidSchedule matches (with errors.Is) every error of ParseSchedule.
var ErrInvalidSchedule = errors.New("invalid schedule")

// Schedule says when a PAM User's password is rotated next.
type Schedule interface {
	// Next returns the first rotation time strictly after t, or the zero
	// time when the schedule never fires on its own (on demand).
	Next(t time.Time) time.Time
	// String describes the schedule for people.
	String() string
}

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a rotation schedule:
//
//   - "" — on demand only: Next always returns the zero time;
//   - "every <duration>" (or "@every <duration>") — a Go duration greater than
//     zero, e.g. "every 24h": Next(t) is t plus the duration;
//   - a cron spec of 5 fields (minute hour day-of-month month day-of-week), or
//     6 with seconds first; '?' is accepted for "any", and descriptors such
//     as "@daily" too.
//
// tz is the IANA time zone (e.g. "Europe/Paris") in which a cron spec is
// read; it defaults to UTC. A cron spec may instead start with "CRON_TZ=zone "
// when tz is empty. A spec that can never fire (e.g. February 30) is refused.
func ParseSchedule(spec, tz string) (Schedule, error) {
	loc, err := loadLocation(tz)
	if err != nil {
		return nil, err
	}
	return parseSpec(spec, loc, tz != "")
}

func loadLocation(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if strings.TrimSpace(tz) != tz {
		return nil, fmt.Errorf("%w: time zone %q has surrounding whitespace", ErrInvalidSchedule, tz)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("%w: unknown time zone %q (want an IANA zone such as Europe/Paris)", ErrInvalidSchedule, tz)
	}
	return loc, nil
}

func parseSpec(spec string, loc *time.Location, tzGiven bool) (Schedule, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return onDemand{}, nil
	}
	for _, prefix := range []string{"every ", "@every "} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			d, err := time.ParseDuration(strings.TrimSpace(rest))
			if err != nil {
				return nil, fmt.Errorf("%w: %q: want %s<Go duration> such as %s24h", ErrInvalidSchedule, spec, prefix, prefix)
			}
			if d <= 0 {
				return nil, fmt.Errorf("%w: %q: the interval must be greater than zero", ErrInvalidSchedule, spec)
			}
			return interval(d), nil
		}
	}
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		if tzGiven {
			return nil, fmt.Errorf("%w: %q: a time zone is given both in the spec and as timezone", ErrInvalidSchedule, spec)
		}
		if !strings.Contains(s, " ") {
			return nil, fmt.Errorf("%w: %q: a cron spec must follow the time zone", ErrInvalidSchedule, spec)
		}
	}
	parsed, err := parseCron(s)
	if err != nil {
		return nil, fmt.Errorf("%w: cron spec %q: %v", ErrInvalidSchedule, spec, err)
	}
	if ss, ok := parsed.(*cron.SpecSchedule); ok && ss.Location == time.Local {
		ss.Location = loc // no CRON_TZ= in the spec
	}
	c := cronSchedule{spec: s, s: parsed}
	if ss, ok := parsed.(*cron.SpecSchedule); ok {
		c.loc = ss.Location
	}
	if c.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("%w: cron spec %q never fires", ErrInvalidSchedule, spec)
	}
	return c, nil
}

// parseCron guards against the parser's panics on malformed input.
func parseCron(spec string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, errors.New("malformed spec")
		}
	}()
	return cronParser.Parse(spec)
}

type onDemand struct{}

func (onDemand) Next(time.Time) time.Time { return time.Time{} }
func (onDemand) String() string           { return "on demand" }

type interval time.Duration

func (d interval) Next(t time.Time) time.Time { return t.Add(time.Duration(d)) }
func (d interval) String() string             { return "every " + time.Duration(d).String() }

type cronSchedule struct {
	spec string
	loc  *time.Location
	s    cron.Schedule
}

func (c cronSchedule) Next(t time.Time) time.Time { return c.s.Next(t) }

func (c cronSchedule) String() string {
	if c.loc == nil || strings.HasPrefix(c.spec, "TZ=") || strings.HasPrefix(c.spec, "CRON_TZ=") {
		return "cron " + c.spec
	}
	return "cron " + c.spec + " (" + c.loc.String() + ")"
}
