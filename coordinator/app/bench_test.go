package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker"

	"github.com/nats-io/nats.go/jetstream"
)

// benchInventory has k users, each with one /bin/sh script on its own
// gateway host h<i>.
func benchInventory(b *testing.B, k int) *inventory.Inventory {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.sh"), []byte("#!/bin/sh\ncat >/dev/null\necho ok\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	var y strings.Builder
	y.WriteString("version: 1\nrecords:\n")
	for i := range k {
		fmt.Fprintf(&y, "  - {uid: cfg%d, type: pamConfiguration, gateway: h%d}\n", i, i)
		fmt.Fprintf(&y, "  - uid: u%d\n    type: pamUser\n    fields: [{type: login, value: u%d}, {type: password, value: pw%d}]\n", i, i, i)
		fmt.Fprintf(&y, "    rotation: {type: scripts_only, configuration: cfg%d}\n    scripts: [{file: s.sh}]\n", i)
	}
	path := filepath.Join(dir, "inv.yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	inv, err := inventory.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	return inv
}

// BenchmarkRotationsParallel measures rotations per second with K workers
// on K hosts, and the time from POST /v1/rotations to the rotation's
// completed event (p50, p99). Each user rotates again as soon as its
// previous rotation completed; the K users run in parallel.
func BenchmarkRotationsParallel(b *testing.B) {
	for _, k := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("K=%d", k), func(b *testing.B) { benchRotations(b, k) })
	}
}

func benchRotations(b *testing.B, k int) {
	inv := benchInventory(b, k)
	br, err := broker.Start(broker.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Shutdown()
	nc, err := br.Connect()
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(js, Options{Inventory: inv, Dispatch: dispatch.Options{}})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer s.Stop(b.Context()) //nolint:errcheck
	for i := range k {
		en, err := s.Enroller().Enroll(b.Context(), fmt.Sprintf("h%d", i))
		if err != nil {
			b.Fatal(err)
		}
		trust, err := en.Credentials.Trust()
		if err != nil {
			b.Fatal(err)
		}
		w, err := worker.New(js, worker.Options{Host: en.Worker.Host, FetchWait: time.Second, Trust: trust})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		defer w.Stop(b.Context()) //nolint:errcheck
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()

	// Completed events tell when a rotation ended.
	var mu sync.Mutex
	done := map[string]chan struct{}{}
	waiter := func(id string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if done[id] == nil {
			done[id] = make(chan struct{})
		}
		return done[id]
	}
	sub, err := nc.Subscribe(messages.Subjects{}.RotationEvent("*"), func(m *nats.Msg) {
		var ev messages.RotationEvent
		if json.Unmarshal(m.Data, &ev) == nil && ev.Kind != messages.EventStarted {
			close(waiter(ev.RotationID))
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck

	rotate := func(user string) string {
		body, _ := json.Marshal(server.RotateRequest{User: user})
		resp, err := http.Post(hs.URL+"/v1/rotations", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Error(err)
			return ""
		}
		defer resp.Body.Close()
		var run runs.Run
		if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&run) != nil {
			b.Errorf("POST: %s", resp.Status)
			return ""
		}
		return run.ID
	}

	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for u := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := u; n < b.N; n += k {
				t0 := time.Now()
				id := rotate(fmt.Sprintf("u%d", u))
				if id == "" {
					return
				}
				select {
				case <-waiter(id):
				case <-time.After(time.Minute):
					b.Errorf("rotation %s did not complete", id)
					return
				}
				latencies[n] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rotations/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99_ms")
}
