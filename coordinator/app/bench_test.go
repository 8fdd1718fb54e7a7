package app

import (
	"bytes"
	"context"
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
	"github.com/postrotate/postrotate/worker/workertest"

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

// benchRotations is BenchmarkRotationsParallel with k users: each rotates
// in turn through the HTTP API, the k users at once.
func benchRotations(b *testing.B, k int) {
	nc, url := startBenchApp(b, k)
	c := watchCompletions(b, nc)
	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for u := range k {
		wg.Go(func() { rotateInTurn(b, url, c, u, k, latencies) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	reportRotations(b, elapsed, latencies)
}

// startBenchApp starts a broker, a coordinator on benchInventory(k), a
// worker enrolled for each host h<i>, and an HTTP server for the API;
// it returns the coordinator's connection and the server's URL. The
// benchmark's cleanup stops them all.
func startBenchApp(b *testing.B, k int) (*nats.Conn, string) {
	inv := benchInventory(b, k)
	br, err := broker.Start(broker.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Shutdown)
	nc, err := br.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
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
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	for i := range k {
		startEnrolledWorker(b, s, js, fmt.Sprintf("h%d", i))
	}
	hs := httptest.NewServer(s.Handler())
	b.Cleanup(hs.Close)
	return nc, hs.URL
}

// startEnrolledWorker enrols host with s and starts its worker with the
// trust it was given; the benchmark's cleanup stops it.
func startEnrolledWorker(b *testing.B, s *App, js jetstream.JetStream, host string) {
	en, err := s.Enroller().Enroll(b.Context(), host)
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
	workertest.Start(b, w, 0)
}

// completions tells when a rotation ended, from its completed event.
type completions struct {
	mu   sync.Mutex
	done map[string]chan struct{}
}

// watchCompletions subscribes to the rotation events until the benchmark
// ends.
func watchCompletions(b *testing.B, nc *nats.Conn) *completions {
	c := &completions{done: map[string]chan struct{}{}}
	sub, err := nc.Subscribe(messages.Subjects{}.RotationEvent("*"), func(m *nats.Msg) {
		var ev messages.RotationEvent
		if json.Unmarshal(m.Data, &ev) == nil && ev.Kind != messages.EventStarted {
			close(c.waiter(ev.RotationID))
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

// waiter returns the channel closed when rotation id ends.
func (c *completions) waiter(id string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done[id] == nil {
		c.done[id] = make(chan struct{})
	}
	return c.done[id]
}

// rotateInTurn rotates user u<u> for the ops u, u+k, u+2k… below b.N, each
// as soon as the previous one completed, and records each op's latency
// from the POST to the completed event.
func rotateInTurn(b *testing.B, url string, c *completions, u, k int, latencies []time.Duration) {
	for n := u; n < b.N; n += k {
		t0 := time.Now()
		id := postRotation(b, url, fmt.Sprintf("u%d", u))
		if id == "" {
			return
		}
		select {
		case <-c.waiter(id):
		case <-time.After(time.Minute):
			b.Errorf("rotation %s did not complete", id)
			return
		}
		latencies[n] = time.Since(t0)
	}
}

// postRotation starts the rotation of user through the API at url and
// returns its id, or "" after reporting the error.
func postRotation(b *testing.B, url, user string) string {
	body, _ := json.Marshal(server.RotateRequest{User: user})
	resp, err := http.Post(url+"/v1/rotations", "application/json", bytes.NewReader(body))
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

// reportRotations reports rotations per second and the p50 and p99
// latencies.
func reportRotations(b *testing.B, elapsed time.Duration, latencies []time.Duration) {
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rotations/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99_ms")
}
