package schedule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/messages/consistent"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func utc(y int, m time.Month, d, h, min, s int) time.Time {
	return time.Date(y, m, d, h, min, s, 0, time.UTC)
}

// env is one test's broker, simulated clock and record of Fire calls.
type env struct {
	t     *testing.T
	b     *broker.Broker
	clock *fakeClock
	fires *fireLog
}

func setup(t *testing.T, start time.Time) *env {
	t.Helper()
	b, err := broker.Start(broker.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	return &env{t: t, b: b, clock: newFakeClock(start), fires: &fireLog{}}
}

// connect opens a connection of its own, as another coordinator would.
func (e *env) connect() (*nats.Conn, jetstream.JetStream) {
	e.t.Helper()
	nc, err := e.b.Connect()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return nc, js
}

// bucket creates the schedules bucket (if needed) for the test to read and
// write. Its configuration differs from the scheduler's, which updates it;
// the test's handle reads from the stream leader, as the scheduler's.
func (e *env) bucket() jetstream.KeyValue {
	e.t.Helper()
	_, js := e.connect()
	if _, err := js.CreateOrUpdateKeyValue(e.t.Context(), jetstream.KeyValueConfig{Bucket: "POSTROTATE_SCHEDULES", History: 5}); err != nil {
		e.t.Fatal(err)
	}
	kv, err := consistent.LeaderReads(e.t.Context(), js, "POSTROTATE_SCHEDULES")
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// instance is one running Scheduler, as in one coordinator.
type instance struct {
	name   string
	s      *Scheduler
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a scheduler called name (its Holder) with the fake clock.
// Zero options: Tick 1h, LeaseTTL 3h, Fire records into e.fires.
func (e *env) start(name string, opts Options, jobs ...Job) *instance {
	e.t.Helper()
	nc, js := e.connect()
	opts.Holder = cmp.Or(opts.Holder, name)
	opts.Clock = e.clock.For(name)
	opts.Tick = cmp.Or(opts.Tick, time.Hour)
	opts.LeaseTTL = cmp.Or(opts.LeaseTTL, 3*time.Hour)
	if opts.Fire == nil {
		opts.Fire = e.fires.recorder(name, e.clock)
	}
	s, err := New(js, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	s.Set(jobs)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{name: name, s: s, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- s.Run(ctx) }()
	e.t.Cleanup(func() { e.stop(in) })
	return in
}

// stop cancels the scheduler and waits for Run to return.
func (e *env) stop(in *instance) {
	e.t.Helper()
	in.once.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil {
				e.t.Errorf("%s: Run: %v", in.name, err)
			}
		case <-time.After(10 * time.Second):
			e.t.Fatalf("%s: Run did not return within 10s of its context's end", in.name)
		}
		e.clock.Forget(in.name)
	})
}

// fired is one call of Fire.
type fired struct {
	holder, user string
	slot, at     time.Time
}

func (f fired) String() string {
	s := f.user + " " + f.slot.UTC().Format(time.DateTime)
	if !f.at.Equal(f.slot) {
		s += " at " + f.at.UTC().Format(time.DateTime)
	}
	return s
}

// fireLog records the calls of Fire; result, when set before the
// schedulers start, says what the nth call (from 1) for a user returns.
type fireLog struct {
	mu     sync.Mutex
	all    []fired
	result func(user string, n int) error
}

func (f *fireLog) recorder(holder string, clock *fakeClock) func(context.Context, string, time.Time) error {
	return func(_ context.Context, user string, slot time.Time) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.all = append(f.all, fired{holder: holder, user: user, slot: slot, at: clock.Now()})
		if f.result == nil {
			return nil
		}
		n := 0
		for _, c := range f.all {
			if c.user == user {
				n++
			}
		}
		return f.result(user, n)
	}
}

// take returns the calls recorded since the last take.
func (f *fireLog) take() []fired {
	f.mu.Lock()
	defer f.mu.Unlock()
	all := f.all
	f.all = nil
	return all
}

// at builds the expected call of Fire for slot, made at slot.
func at(user string, slot time.Time) fired { return fired{user: user, slot: slot, at: slot} }

// late builds the expected call of Fire for slot, made at when.
func late(user string, slot, when time.Time) fired { return fired{user: user, slot: slot, at: when} }

func checkFires(t *testing.T, got []fired, want ...fired) {
	t.Helper()
	str := func(fs []fired) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.String()
		}
		return out
	}
	if g, w := str(got), str(want); !slices.Equal(g, w) {
		t.Errorf("Fire calls:\n  got  %s\n  want %s", strings.Join(g, "\n       "), strings.Join(w, "\n       "))
	}
}

// eventually waits until cond holds, for what a scheduler learns from its
// watch of the bucket, which has no event a test could wait on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("not within 10s: %s", what)
		}
	}
}

func readState(t *testing.T, kv jetstream.KeyValue, user string) userState {
	t.Helper()
	e, err := kv.Get(t.Context(), userKey(user))
	if err != nil {
		t.Fatalf("state of %s: %v", user, err)
	}
	return decodeState(e.Value())
}

func putState(t *testing.T, kv jetstream.KeyValue, st userState) {
	t.Helper()
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), userKey(st.User), data); err != nil {
		t.Fatal(err)
	}
}

func readLease(t *testing.T, kv jetstream.KeyValue) leaseRecord {
	t.Helper()
	e, err := kv.Get(t.Context(), leaderKey)
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	var rec leaseRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestFiresOnSchedule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, spec, tz string
		start, end     time.Time
		want           []time.Time
	}{
		{
			name: "cron 5 fields", spec: "0 3 * * *",
			start: utc(2025, 3, 10, 12, 0, 0), end: utc(2025, 3, 13, 12, 0, 0),
			want: []time.Time{utc(2025, 3, 11, 3, 0, 0), utc(2025, 3, 12, 3, 0, 0), utc(2025, 3, 13, 3, 0, 0)},
		},
		{
			name: "cron 6 fields with seconds and ?", spec: "30 0 3 ? * *",
			start: utc(2025, 3, 10, 12, 0, 0), end: utc(2025, 3, 12, 12, 0, 0),
			want: []time.Time{utc(2025, 3, 11, 3, 0, 30), utc(2025, 3, 12, 3, 0, 30)},
		},
		{
			name: "descriptor", spec: "@daily",
			start: utc(2025, 3, 10, 12, 0, 0), end: utc(2025, 3, 12, 12, 0, 0),
			want: []time.Time{utc(2025, 3, 11, 0, 0, 0), utc(2025, 3, 12, 0, 0, 0)},
		},
		{
			name: "every 90m", spec: "every 90m",
			start: utc(2025, 3, 10, 12, 5, 0), end: utc(2025, 3, 10, 18, 5, 0),
			want: []time.Time{utc(2025, 3, 10, 13, 35, 0), utc(2025, 3, 10, 15, 5, 0), utc(2025, 3, 10, 16, 35, 0), utc(2025, 3, 10, 18, 5, 0)},
		},
		{
			// Daylight saving time starts on 9 March 2025 in New York:
			// 03:00 there is 08:00 UTC before, 07:00 UTC after.
			name: "time zone across DST", spec: "0 3 * * *", tz: "America/New_York",
			start: utc(2025, 3, 7, 12, 0, 0), end: utc(2025, 3, 11, 12, 0, 0),
			want: []time.Time{utc(2025, 3, 8, 8, 0, 0), utc(2025, 3, 9, 7, 0, 0), utc(2025, 3, 10, 7, 0, 0), utc(2025, 3, 11, 7, 0, 0)},
		},
		{
			name: "time zone in summer", spec: "0 3 * * *", tz: "America/New_York",
			start: utc(2025, 7, 10, 12, 0, 0), end: utc(2025, 7, 11, 12, 0, 0),
			want: []time.Time{utc(2025, 7, 11, 7, 0, 0)},
		},
		{
			name: "time zone in winter", spec: "0 3 * * *", tz: "America/New_York",
			start: utc(2025, 12, 10, 12, 0, 0), end: utc(2025, 12, 11, 12, 0, 0),
			want: []time.Time{utc(2025, 12, 11, 8, 0, 0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, tt.start)
			s := e.start("a", Options{}, Job{User: "alice", Schedule: mustSchedule(t, tt.spec, tt.tz)})
			e.clock.WaitBlocked(t)
			if !s.s.Leader() {
				t.Fatal("a lone scheduler does not lead")
			}
			if next, ok := s.s.Next("alice"); !ok || !next.Equal(tt.want[0]) {
				t.Errorf("Next(alice) = %v, %v; want %v", next, ok, tt.want[0])
			}
			e.clock.RunUntil(t, tt.want[0].Add(-time.Second))
			checkFires(t, e.fires.take()) // not before
			e.clock.RunUntil(t, tt.end)
			var want []fired
			for _, slot := range tt.want {
				want = append(want, at("alice", slot))
			}
			checkFires(t, e.fires.take(), want...)
		})
	}
}

func TestCatchUpFiresOnceAtStart(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 20, 12, 0, 0)
	e := setup(t, start)
	kv := e.bucket()
	daily := mustSchedule(t, "0 3 * * *", "")
	every7h := mustSchedule(t, "every 7h", "")
	tenDaysAgo := utc(2025, 3, 10, 3, 0, 0)
	putState(t, kv, userState{User: "alice", Schedule: daily.String(), Since: utc(2025, 3, 1, 0, 0, 0), LastSlot: tenDaysAgo})
	putState(t, kv, userState{User: "bob", Schedule: every7h.String(), Since: tenDaysAgo})

	e.start("a", Options{}, Job{User: "alice", Schedule: daily}, Job{User: "bob", Schedule: every7h})
	e.clock.WaitBlocked(t)
	// Every 7h since 10 March 03:00: the 35th slot, 20 March 08:00, is
	// the latest by noon on the 20th.
	bobSlot := tenDaysAgo.Add(35 * 7 * time.Hour)
	checkFires(t, e.fires.take(),
		late("alice", utc(2025, 3, 20, 3, 0, 0), start),
		late("bob", bobSlot, start))

	e.clock.RunUntil(t, utc(2025, 3, 21, 12, 0, 0))
	checkFires(t, e.fires.take(),
		at("bob", bobSlot.Add(7*time.Hour)),
		at("bob", bobSlot.Add(14*time.Hour)),
		at("alice", utc(2025, 3, 21, 3, 0, 0)),
		at("bob", bobSlot.Add(21*time.Hour)),
		at("bob", bobSlot.Add(28*time.Hour)))
	if st := readState(t, kv, "alice"); !st.LastSlot.Equal(utc(2025, 3, 21, 3, 0, 0)) || !st.LastFiredAt.Equal(utc(2025, 3, 21, 3, 0, 0)) {
		t.Errorf("state of alice = %+v; want last slot and last fired at 21 March 03:00", st)
	}
}

func TestTwoSchedulersFireEachSlotOnce(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 1, 12, 0, 0)
	e := setup(t, start)
	kv := e.bucket()
	jobs := []Job{
		{User: "alice", Schedule: mustSchedule(t, "0 3 * * *", "")},
		{User: "bob", Schedule: mustSchedule(t, "0 */6 * * *", "")},
		{User: "carol", Schedule: mustSchedule(t, "every 5h", "")},
		{User: "dave", Schedule: mustSchedule(t, "", "")},
		{User: "erin@example.com", Schedule: mustSchedule(t, "30 0 3 ? * *", "America/New_York")},
	}
	a := e.start("a", Options{}, jobs...)
	b := e.start("b", Options{}, jobs...)
	e.clock.WaitBlocked(t)
	if a.s.Leader() == b.s.Leader() {
		t.Fatalf("a leads: %v, b leads: %v; want exactly one leader", a.s.Leader(), b.s.Leader())
	}
	leader, follower := a, b
	if b.s.Leader() {
		leader, follower = b, a
	}

	crashAt := start.Add(10*24*time.Hour + 210*time.Minute)
	e.clock.RunUntil(t, crashAt)
	if !leader.s.Leader() || follower.s.Leader() {
		t.Fatalf("leadership moved without a failure")
	}
	// The leader loses NATS: it keeps the lease until it expires, then
	// the follower takes over.
	expires := readLease(t, kv).ExpiresAt
	leader.nc.Close()
	e.clock.RunUntil(t, expires.Add(-time.Second))
	if !leader.s.Leader() || follower.s.Leader() {
		t.Errorf("a second before the lease expires: old leader leads: %v, follower leads: %v; want true, false", leader.s.Leader(), follower.s.Leader())
	}
	e.clock.RunUntil(t, expires)
	if leader.s.Leader() || !follower.s.Leader() {
		t.Errorf("when the lease expires: old leader leads: %v, follower leads: %v; want false, true", leader.s.Leader(), follower.s.Leader())
	}
	e.stop(leader)
	end := start.Add(20 * 24 * time.Hour)
	e.clock.RunUntil(t, end)

	got := e.fires.take()
	checkFiredBy(t, got, leader.name, follower.name, expires)
	slices.SortStableFunc(got, func(x, y fired) int {
		return cmp.Or(strings.Compare(x.user, y.user), x.slot.Compare(y.slot))
	})
	want, lateFires := eachSlotOnce(jobs, start, end, crashAt, expires)
	if lateFires == 0 {
		t.Fatal("no slot falls between the crash and the takeover: the test proves less than it should")
	}
	checkFires(t, got, want...)
	t.Logf("%d slots fired once each, %d of them late after the takeover", len(want), lateFires)
}

// checkFiredBy checks that the fires before the lease expired were the old
// leader's, and the others the follower's.
func checkFiredBy(t *testing.T, got []fired, leader, follower string, expires time.Time) {
	t.Helper()
	for _, f := range got {
		want := follower
		if f.at.Before(expires) {
			want = leader
		}
		if f.holder != want {
			t.Errorf("%s fired by %s; want %s", f, f.holder, want)
		}
	}
}

// eachSlotOnce returns the fires of every slot of jobs from start to end,
// by user then slot, each once: on time, or when the lease expires for a
// slot between the leader's crash and then (lateFires counts those).
func eachSlotOnce(jobs []Job, start, end, crashAt, expires time.Time) (want []fired, lateFires int) {
	for _, j := range jobs {
		for slot := j.Schedule.Next(start); !slot.IsZero() && !slot.After(end); slot = j.Schedule.Next(slot) {
			when := slot
			if slot.After(crashAt) && slot.Before(expires) {
				when = expires // fired late by the new leader, not lost
				lateFires++
			}
			want = append(want, late(j.User, slot, when))
		}
	}
	return want, lateFires
}

func TestStopHandsOverLease(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 1, 12, 0, 0)
	e := setup(t, start)
	job := Job{User: "alice", Schedule: mustSchedule(t, "every 30m", "")}
	a := e.start("a", Options{Tick: 10 * time.Minute}, job)
	e.clock.WaitBlocked(t)
	b := e.start("b", Options{Tick: 10 * time.Minute}, job)
	e.clock.RunUntil(t, start.Add(time.Hour))
	if !a.s.Leader() || b.s.Leader() {
		t.Fatalf("a leads: %v, b leads: %v; want the first one started", a.s.Leader(), b.s.Leader())
	}
	// The follower sees the state the leader stores.
	want, _ := a.s.Next("alice")
	if !want.Equal(start.Add(90 * time.Minute)) {
		t.Errorf("leader: Next(alice) = %v; want %v", want, start.Add(90*time.Minute))
	}
	eventually(t, "the follower's Next(alice) is the leader's", func() bool {
		next, ok := b.s.Next("alice")
		return ok && next.Equal(want)
	})
	e.stop(a)
	if a.s.Leader() {
		t.Error("a stopped scheduler still leads")
	}
	// b takes the released lease at its next tick, not when it expires.
	e.clock.RunUntil(t, start.Add(70*time.Minute))
	if !b.s.Leader() {
		t.Error("b does not lead one tick after a stopped")
	}
	e.clock.RunUntil(t, start.Add(2*time.Hour))
	got := e.fires.take()
	checkFires(t, got,
		at("alice", start.Add(30*time.Minute)), at("alice", start.Add(time.Hour)),
		at("alice", start.Add(90*time.Minute)), at("alice", start.Add(2*time.Hour)))
	if got[1].holder != "a" || got[2].holder != "b" {
		t.Errorf("fired by %s then %s; want a then b", got[1].holder, got[2].holder)
	}
}

func TestLostLeaseStopsFiring(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 1, 12, 0, 0)
	e := setup(t, start)
	kv := e.bucket()
	a := e.start("a", Options{}, Job{User: "alice", Schedule: mustSchedule(t, "every 1h", "")})
	e.clock.RunUntil(t, start.Add(2*time.Hour))
	checkFires(t, e.fires.take(), at("alice", start.Add(time.Hour)), at("alice", start.Add(2*time.Hour)))

	// Another holder overwrites the lease: a finds out at its next renewal
	// (the next hour) and fires nothing from then on.
	intruder, _ := json.Marshal(leaseRecord{Holder: "intruder", ExpiresAt: start.Add(10 * time.Hour)})
	if _, err := kv.Put(t.Context(), leaderKey, intruder); err != nil {
		t.Fatal(err)
	}
	e.clock.RunUntil(t, start.Add(10*time.Hour-time.Second))
	if a.s.Leader() {
		t.Error("a still leads after another holder took the lease")
	}
	checkFires(t, e.fires.take())

	// The intruder's lease expires: a takes over and fires the slots it
	// missed as one, the latest.
	e.clock.RunUntil(t, start.Add(10*time.Hour))
	if !a.s.Leader() {
		t.Error("a does not lead once the other lease expired")
	}
	checkFires(t, e.fires.take(), at("alice", start.Add(10*time.Hour)))
	if rec := readLease(t, kv); rec.Holder != "a" {
		t.Errorf("lease holder = %q; want a", rec.Holder)
	}
}

func TestFireErrors(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 10, 2, 0, 0)
	e := setup(t, start)
	kv := e.bucket()
	e.fires.result = func(user string, n int) error {
		switch {
		case user == "alice" && n <= 2:
			return fmt.Errorf("worker busy: %w", ErrRetry)
		case user == "bob":
			return errors.New("boom")
		}
		return nil
	}
	daily := mustSchedule(t, "0 3 * * *", "")
	e.start("a", Options{Tick: 10 * time.Minute}, Job{User: "alice", Schedule: daily}, Job{User: "bob", Schedule: daily})
	slot := utc(2025, 3, 10, 3, 0, 0)
	e.clock.RunUntil(t, utc(2025, 3, 11, 4, 0, 0))
	checkFires(t, e.fires.take(),
		at("alice", slot), at("bob", slot),
		late("alice", slot, slot.Add(10*time.Minute)),
		late("alice", slot, slot.Add(20*time.Minute)),
		at("alice", slot.AddDate(0, 0, 1)), at("bob", slot.AddDate(0, 0, 1)))
	if st := readState(t, kv, "alice"); !st.LastSlot.Equal(slot.AddDate(0, 0, 1)) {
		t.Errorf("last slot of alice = %v; want %v", st.LastSlot, slot.AddDate(0, 0, 1))
	}
}

func TestSetChangesJobs(t *testing.T) {
	t.Parallel()
	start := utc(2025, 3, 1, 12, 0, 0)
	e := setup(t, start)
	kv := e.bucket()
	a := e.start("a", Options{Tick: 10 * time.Minute},
		Job{User: "alice", Schedule: mustSchedule(t, "every 2h", "")},
		Job{User: "bob", Schedule: mustSchedule(t, "every 1h", "")},
		Job{User: "carol", Schedule: mustSchedule(t, "", "")},
		Job{User: ""}, // ignored
	)
	e.clock.WaitBlocked(t)
	for _, tt := range []struct {
		user string
		next time.Time // zero: none
	}{
		{"alice", start.Add(2 * time.Hour)},
		{"bob", start.Add(time.Hour)},
		{"carol", time.Time{}},
		{"nobody", time.Time{}},
	} {
		if next, ok := a.s.Next(tt.user); ok != !tt.next.IsZero() || !next.Equal(tt.next) {
			t.Errorf("Next(%s) = %v, %v; want %v", tt.user, next, ok, tt.next)
		}
	}
	e.clock.RunUntil(t, start.Add(time.Hour))
	checkFires(t, e.fires.take(), at("bob", start.Add(time.Hour)))

	// alice's schedule changes and bob leaves: the change applies at the
	// next tick, and alice's new schedule counts from then.
	a.s.Set([]Job{{User: "alice", Schedule: mustSchedule(t, "every 3h", "")}})
	changed := start.Add(time.Hour + 10*time.Minute)
	e.clock.RunUntil(t, changed)
	if st := readState(t, kv, "alice"); !st.Since.Equal(changed) || st.Schedule != "every 3h0m0s" || !st.LastSlot.IsZero() {
		t.Errorf("state of alice after the change = %+v; want since %v, schedule every 3h0m0s, no last slot", st, changed)
	}
	if next, ok := a.s.Next("alice"); !ok || !next.Equal(changed.Add(3*time.Hour)) {
		t.Errorf("Next(alice) = %v, %v; want %v", next, ok, changed.Add(3*time.Hour))
	}
	if _, ok := a.s.Next("bob"); ok {
		t.Error("Next(bob) reports a time after bob left the job set")
	}
	e.clock.RunUntil(t, start.Add(8*time.Hour))
	checkFires(t, e.fires.take(), at("alice", changed.Add(3*time.Hour)), at("alice", changed.Add(6*time.Hour)))
}

// TestRacingLeadersClaimEachSlotOnce has two schedulers that both believe
// they hold the lease fire the due slots at the same time: the
// compare-and-set of the state lets exactly one fire each.
func TestRacingLeadersClaimEachSlotOnce(t *testing.T) {
	t.Parallel()
	now := utc(2025, 3, 20, 12, 0, 0)
	e := setup(t, now)
	kv := e.bucket()
	daily := mustSchedule(t, "0 3 * * *", "")
	var jobs []Job
	for i := range 20 {
		j := Job{User: fmt.Sprintf("user-%02d", i), Schedule: daily}
		jobs = append(jobs, j)
		putState(t, kv, userState{User: j.User, Schedule: daily.String(), Since: utc(2025, 3, 1, 0, 0, 0), LastSlot: utc(2025, 3, 19, 3, 0, 0)})
	}
	var schedulers []*Scheduler
	var kvs []jetstream.KeyValue
	for _, name := range []string{"a", "b"} {
		_, js := e.connect()
		s, err := New(js, Options{Holder: name, Clock: e.clock.For(name), Fire: e.fires.recorder(name, e.clock)})
		if err != nil {
			t.Fatal(err)
		}
		s.Set(jobs)
		skv, err := s.bind(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		s.lease = lease{rev: 1, expires: now.Add(time.Hour), renewAt: now.Add(time.Hour)} // both believe they lead
		schedulers, kvs = append(schedulers, s), append(kvs, skv)
	}
	var wg sync.WaitGroup
	for i, s := range schedulers {
		wg.Go(func() { s.tick(t.Context(), kvs[i]) })
	}
	wg.Wait()
	got := e.fires.take()
	slices.SortFunc(got, func(x, y fired) int { return strings.Compare(x.user, y.user) })
	var want []fired
	for _, j := range jobs {
		want = append(want, late(j.User, utc(2025, 3, 20, 3, 0, 0), now))
	}
	checkFires(t, got, want...)
}

func TestRealClock(t *testing.T) {
	t.Parallel()
	e := setup(t, time.Time{})
	_, js := e.connect()
	fires := make(chan time.Time, 10)
	s, err := New(js, Options{Tick: 10 * time.Millisecond, Fire: func(_ context.Context, user string, slot time.Time) error {
		select {
		case fires <- slot:
		default:
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.Set([]Job{{User: "alice", Schedule: mustSchedule(t, "every 50ms", "")}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-fires:
	case <-time.After(10 * time.Second):
		t.Fatal("no rotation fired within 10s")
	}
	if !s.Leader() {
		t.Error("a lone scheduler does not lead")
	}
	if err := s.Run(ctx); err == nil {
		t.Error("a second concurrent Run returned nil; want an error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if s.Leader() {
		t.Error("a stopped scheduler still leads")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	e := setup(t, time.Time{})
	_, js := e.connect()
	fire := func(context.Context, string, time.Time) error { return nil }
	for _, tt := range []struct {
		name string
		js   jetstream.JetStream
		opts Options
	}{
		{"no JetStream", nil, Options{Fire: fire}},
		{"no Fire", js, Options{}},
		{"negative LeaseTTL", js, Options{Fire: fire, LeaseTTL: -time.Second}},
		{"negative Tick", js, Options{Fire: fire, Tick: -time.Second}},
		{"negative Replicas", js, Options{Fire: fire, Replicas: -1}},
	} {
		if _, err := New(tt.js, tt.opts); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: New error = %v; want ErrInvalidOptions", tt.name, err)
		}
	}
	s, err := New(js, Options{Fire: fire})
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	if o.Bucket != "POSTROTATE_SCHEDULES" || o.Replicas != 1 || o.Holder == "" || o.LeaseTTL != 15*time.Second || o.Tick != time.Second || o.Clock == nil {
		t.Errorf("defaults = %+v", o)
	}
	if s2, _ := New(js, Options{Fire: fire}); s2.opts.Holder == o.Holder {
		t.Errorf("two schedulers of one process both hold as %q", o.Holder)
	}
}

var _ inventory.Schedule = stepSchedule(0)
