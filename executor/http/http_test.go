package http

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/payload"
)

const (
	newPassword = "N3w-Marker-Pw!\"<&>"
	apiToken    = "tok-marker-77c1"
)

// keeperJob builds a job whose payload is the one of Keeper's "rotate a
// credential via REST API" example.
func keeperJob(t *testing.T, req *executor.Request) executor.Job {
	t.Helper()
	in := payload.Input{
		User: payload.Record{UID: "svc", Type: "pamUser", Title: "svc", Fields: []payload.Field{
			{Type: "login", Value: []any{"svc@example.com"}}, {Type: "password", Value: []any{"old-pw"}},
		}},
		Additional: []payload.Record{{UID: "tok", Type: "login", Title: "Record with Access Token", Fields: []payload.Field{
			{Type: "password", Value: []any{apiToken}}, {Type: "url", Value: []any{"http://example"}},
		}}},
		NewPassword: newPassword,
		OldPassword: "old-pw",
	}
	p, err := payload.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return executor.Job{RotationID: "rot-1", Step: 2, Attempt: 1, Stdin: stdin, Secrets: in.Secrets(), Request: req,
		Script: executor.Script{Name: "http", Timeout: 10 * time.Second}}
}

// recorder is a test API that records the requests it answers.
type recorder struct {
	mu      sync.Mutex
	reqs    []recorded
	answers []int
}

type recorded struct {
	method, path, body string
	header             http.Header
}

func (r *recorder) handler(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.RequestURI(), string(body), req.Header.Clone()})
	code := http.StatusCreated
	if len(r.answers) > 0 {
		code = r.answers[0]
		if len(r.answers) > 1 {
			r.answers = r.answers[1:]
		}
	}
	r.mu.Unlock()
	w.WriteHeader(code)
	_, _ = w.Write([]byte(`{"echo":` + string(mustJSON(string(body))) + `}`))
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func serve(t *testing.T, answers ...int) (*recorder, string) {
	rec := &recorder{answers: answers}
	srv := httptest.NewServer(http.HandlerFunc(rec.handler))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func fast() *HTTP {
	return New(Options{RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
}

func keeperRequest(base string) *executor.Request {
	return &executor.Request{
		Method:       "POST",
		URL:          base + "/users/{{urlquery .User}}/password",
		Headers:      map[string]string{"Authorization": `Bearer {{record "Record with Access Token" "password"}}`, "Content-Type": "application/json"},
		Body:         `{"userEmail": {{json .User}}, "newPassword": {{json .NewPassword}}}`,
		ExpectStatus: []int{201},
	}
}

func noSecret(t *testing.T, res executor.Result) {
	t.Helper()
	all, _ := json.Marshal(res)
	for _, s := range []string{newPassword, apiToken, "old-pw"} {
		if strings.Contains(string(all), s) {
			t.Fatalf("result leaks %q: %s", s, all)
		}
	}
}

func TestKeeperRESTRotation(t *testing.T) {
	t.Parallel()
	rec, base := serve(t)
	res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(base)))
	if err != nil || !res.Success() || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	var body map[string]string
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body["newPassword"] != newPassword || body["userEmail"] != "svc@example.com" {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if r.path != "/users/svc%40example.com/password" || r.header.Get("Authorization") != "Bearer "+apiToken ||
		r.header.Get("Idempotency-Key") != "postrotate-rot-1-2" {
		t.Fatalf("request = %+v", r)
	}
	if !strings.HasPrefix(res.Command, "POST http://127.0.0.1:") || !strings.Contains(res.Stdout, "201 Created") {
		t.Fatalf("result = %+v", res)
	}
	noSecret(t, res) // the server echoed the body: it comes back masked
}

func TestRetriesWithOneIdempotencyKey(t *testing.T) {
	t.Parallel()
	rec, base := serve(t, 503, 502, 201)
	res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(base)))
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	reqs := rec.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.header.Get("Idempotency-Key") != "postrotate-rot-1-2" {
			t.Fatalf("attempt with key %q", r.header.Get("Idempotency-Key"))
		}
	}
	if !strings.Contains(res.Stderr, "503") {
		t.Fatalf("retries not noted: %q", res.Stderr)
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	t.Parallel()
	for _, code := range []int{400, 404} {
		rec, base := serve(t, code)
		res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(base)))
		if err != nil || res.Success() || res.ExitCode != code || len(rec.requests()) != 1 {
			t.Fatalf("%d: Run = %+v, %v, %d attempts", code, res, err, len(rec.requests()))
		}
		noSecret(t, res)
	}
}

func TestServerErrorForever(t *testing.T) {
	t.Parallel()
	rec, base := serve(t, 500)
	res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(base)))
	if err != nil || res.Success() || res.ExitCode != 500 || len(rec.requests()) != 4 {
		t.Fatalf("Run = %+v, %v, %d attempts (want 4)", res, err, len(rec.requests()))
	}
}

func TestExpectStatus(t *testing.T) {
	t.Parallel()
	_, base := serve(t, 200)
	res, _ := fast().Run(t.Context(), keeperJob(t, keeperRequest(base))) // expects 201
	if res.Success() || !strings.Contains(res.Error, "unexpected status 200") {
		t.Fatalf("Run = %+v", res)
	}
	req := keeperRequest(base)
	req.ExpectStatus = nil // any 2xx
	if res, _ := fast().Run(t.Context(), keeperJob(t, req)); !res.Success() {
		t.Fatalf("any 2xx: %+v", res)
	}
}

func TestTemplateErrorsSendNothing(t *testing.T) {
	t.Parallel()
	rec, base := serve(t)
	for name, mod := range map[string]func(*executor.Request){
		"unknown record": func(r *executor.Request) { r.Headers["Authorization"] = `{{record "Nope" "password"}}` },
		"unknown field":  func(r *executor.Request) { r.Body = `{{record "Record with Access Token" "nope"}}` },
		"missing key":    func(r *executor.Request) { r.URL = base + "/{{.Nope}}" },
		"bad syntax":     func(r *executor.Request) { r.Body = `{{.NewPassword` },
	} {
		req := keeperRequest(base)
		mod(req)
		res, err := fast().Run(t.Context(), keeperJob(t, req))
		if err != nil || res.Success() || !strings.Contains(res.Error, "template") {
			t.Errorf("%s: Run = %+v, %v", name, res, err)
		}
		noSecret(t, res)
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block); srv.Close() })
	job := keeperJob(t, keeperRequest(srv.URL))
	job.Script.Timeout = 300 * time.Millisecond
	res, err := fast().Run(t.Context(), job)
	if err != nil || !res.TimedOut || res.Success() {
		t.Fatalf("timeout: %+v, %v", res, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	job.Script.Timeout = time.Minute
	if _, err := fast().Run(ctx, job); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: err = %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(base)))
	if err != nil || res.Success() || !strings.Contains(res.Error, "no response after 4 attempts") {
		t.Fatalf("Run = %+v, %v", res, err)
	}
}

func TestHugeResponseCapped(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		_, _ = io.Copy(w, io.LimitReader(zeros{}, 10<<20))
	}))
	t.Cleanup(srv.Close)
	res, err := fast().Run(t.Context(), keeperJob(t, keeperRequest(srv.URL)))
	if err != nil || !res.Success() || !res.StdoutTruncated || len(res.Stdout) > 1<<20+100 {
		t.Fatalf("Run: success %v truncated %v len %d, %v", res.Success(), res.StdoutTruncated, len(res.Stdout), err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
