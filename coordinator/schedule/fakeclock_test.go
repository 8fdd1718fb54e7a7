package schedule

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a simulated clock shared by the schedulers of a test. Each
// scheduler gets its own handle (For), so the clock knows when every one of
// them is blocked in After: the test moves time only then, and waits until
// they are all blocked again before it looks at the outcome. Time only moves
// when the test moves it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	latest  map[string]*fakeTimer // the last After of each scheduler
	changed chan struct{}         // closed and replaced at every After
}

type fakeTimer struct {
	at    time.Time
	ch    chan time.Time
	fired bool
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, latest: map[string]*fakeTimer{}, changed: make(chan struct{})}
}

// For returns the clock of the scheduler called name.
func (c *fakeClock) For(name string) Clock {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latest[name] = nil
	return fakeHandle{c, name}
}

// Forget stops waiting for the scheduler called name (it stopped).
func (c *fakeClock) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.latest, name)
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) after(name string, d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.fired = true
		t.ch <- c.now
	}
	if _, ok := c.latest[name]; ok {
		c.latest[name] = t
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return t.ch
}

// WaitBlocked waits until every scheduler is blocked in After.
func (c *fakeClock) WaitBlocked(t *testing.T) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		blocked := true
		for _, tm := range c.latest {
			if tm == nil || tm.fired {
				blocked = false
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if blocked {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("schedulers not blocked in Clock.After within 10s")
		}
	}
}

// set moves the clock to to (not backwards), fires the timers due by then,
// and waits until every scheduler is blocked again.
func (c *fakeClock) set(t *testing.T, to time.Time) {
	t.Helper()
	c.mu.Lock()
	if to.After(c.now) {
		c.now = to
	}
	for _, tm := range c.latest {
		if tm != nil && !tm.fired && !tm.at.After(c.now) {
			tm.fired = true
			tm.ch <- c.now
		}
	}
	c.mu.Unlock()
	c.WaitBlocked(t)
}

// next returns the earliest time a scheduler waits for.
func (c *fakeClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	for _, tm := range c.latest {
		if tm != nil && !tm.fired && (at.IsZero() || tm.at.Before(at)) {
			at = tm.at
		}
	}
	return at, !at.IsZero()
}

// RunUntil moves the clock to end one wake-up at a time: every scheduler
// wakes exactly when it asked to, and has finished with that instant before
// the clock moves on.
func (c *fakeClock) RunUntil(t *testing.T, end time.Time) {
	t.Helper()
	c.WaitBlocked(t)
	for {
		at, ok := c.next()
		if !ok || at.After(end) {
			break
		}
		c.set(t, at)
	}
	c.set(t, end)
}

type fakeHandle struct {
	c    *fakeClock
	name string
}

func (h fakeHandle) Now() time.Time                         { return h.c.Now() }
func (h fakeHandle) After(d time.Duration) <-chan time.Time { return h.c.after(h.name, d) }
