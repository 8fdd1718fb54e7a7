// Package http is the HTTP executor: it runs a declarative attachment
// (method, url, headers, body, expected statuses) instead of a script — the
// most common post-rotation job, changing an account through a REST API,
// without Python on the gateway.
//
// URL, header values and body are Go templates over the Keeper payload:
//
//	{{.NewPassword}} {{.OldPassword}} {{.User}} {{.UserRecordUID}}
//	{{.ResourceRecordUID}} {{.ProviderRecordUID}}
//	{{record "Record with Access Token" "password"}}   a field of a record, by title or uid
//	{{json .NewPassword}} {{urlquery .User}} {{base64 .User}}
//
// Requests are sent with go-retryablehttp: connection errors, 5xx and 429
// are retried with backoff, other 4xx are not; every attempt carries the
// same Idempotency-Key, derived from the rotation and the step.
//
// The Result's ExitCode is 0 when the final status is expected (any 2xx, or
// one of ExpectStatus), the HTTP status when it is not, and -1 without a
// response. Stdout holds the status line and the response body, Stderr the
// retries; both are capped and masked, and so is the Command ("POST <url>").
// Credential headers (Authorization, Cookie, *token*, *secret*, *key*) are
// added to the masked values.
package http

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/payload"
)

// Options configure the HTTP executor. A zero field means its default.
type Options struct {
	// RetryMax is how many times a request is retried. Defaults to 3.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff. Default 200ms and 5s.
	RetryWaitMin, RetryWaitMax time.Duration
	// TLSConfig configures TLS; nil means the system roots.
	TLSConfig *tls.Config
}

// HTTP sends declarative requests.
type HTTP struct {
	opts Options
}

var _ executor.Executor = (*HTTP)(nil)

// New returns an HTTP executor.
func New(opts Options) *HTTP {
	opts.RetryMax = cmp.Or(opts.RetryMax, 3)
	opts.RetryWaitMin = cmp.Or(opts.RetryWaitMin, 200*time.Millisecond)
	opts.RetryWaitMax = cmp.Or(opts.RetryWaitMax, 5*time.Second)
	return &HTTP{opts: opts}
}

// ErrNoRequest is returned for a job without a Request.
var ErrNoRequest = errors.New("job has no http request")

// data is what the templates see.
type data struct {
	NewPassword, OldPassword, User                      string
	UserRecordUID, ResourceRecordUID, ProviderRecordUID string
}

// sensitiveHeader reports whether a header's value is a credential.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	return n == "authorization" || n == "cookie" || n == "proxy-authorization" || n == "x-api-key" ||
		strings.Contains(n, "token") || strings.Contains(n, "secret") || strings.Contains(n, "key")
}

// Run renders and sends the job's request. A response with an unexpected
// status is a failed Result; Run returns an error only for a job without a
// request or a cancelled ctx.
func (h *HTTP) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	res := executor.Result{System: executor.System(runtime.GOOS), ExitCode: 0, StartedAt: time.Now()}
	failed := func(msg string) (executor.Result, error) {
		res.Error = msg
		res.FinishedAt = time.Now()
		return res, nil
	}
	if job.Request == nil {
		res.FinishedAt = time.Now()
		return res, ErrNoRequest
	}
	params, err := payload.Decode(job.Stdin)
	if err != nil {
		return failed("decode payload: " + err.Error())
	}
	dicts, err := params.RecordDicts()
	if err != nil {
		return failed("decode payload records: " + err.Error())
	}
	req, secrets, err := renderRequest(job.Request, newRenderer(params, dicts))
	job.Secrets = append(slices.Clone(job.Secrets), secrets...)
	mask := job.Masker()
	if err != nil {
		return failed(mask.Mask(err.Error()))
	}
	res.Command = mask.Mask(req.method + " " + req.url)
	return h.send(ctx, job, req, mask, res)
}

// request is a job's request with its templates rendered.
type request struct {
	method, url, body string
	headers           map[string]string
	expect            []int // ExpectStatus
}

// renderRequest renders the templates of req. It returns the values of the
// credential headers rendered, to be masked, also with an error.
func renderRequest(req *executor.Request, render func(what, text string) (string, error)) (request, []string, error) {
	r := request{method: cmp.Or(strings.ToUpper(req.Method), http.MethodPost), headers: map[string]string{}, expect: req.ExpectStatus}
	var secrets []string
	u, err := render("url", req.URL)
	if err == nil {
		_, err = url.Parse(u)
	}
	r.url = u
	for name, v := range req.Headers {
		if err != nil {
			break
		}
		var rv string
		rv, err = render("header "+name, v)
		r.headers[name] = rv
		if sensitiveHeader(name) {
			secrets = append(secrets, rv)
			if _, tok, ok := strings.Cut(rv, " "); ok {
				secrets = append(secrets, tok) // "Bearer <token>": the token alone
			}
		}
	}
	if err == nil {
		r.body, err = render("body", req.Body)
	}
	return r, secrets, err
}

// send sends the rendered request, retrying, within the job's timeout, and
// completes res with the response.
func (h *HTTP) send(ctx context.Context, job executor.Job, req request, mask *executor.Masker, res executor.Result) (executor.Result, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, job.EffectiveTimeout())
	defer cancel()
	stderr := executor.NewOutput(job.EffectiveOutputLimit())
	attempts := 0
	client := h.newClient(stderr, &attempts)
	rq, err := retryablehttp.NewRequestWithContext(ctx, req.method, req.url, bytes.NewReader([]byte(req.body)))
	if err != nil {
		res.Error = mask.Mask("build request: " + err.Error())
		res.FinishedAt = time.Now()
		return res, nil
	}
	for name, v := range req.headers {
		rq.Header.Set(name, v)
	}
	if rq.Header.Get("Idempotency-Key") == "" {
		rq.Header.Set("Idempotency-Key", fmt.Sprintf("postrotate-%s-%d", job.RotationID, job.Step))
	}
	resp, err := client.Do(rq)
	if err != nil {
		res.ExitCode = -1
		res.Stderr, res.StderrTruncated = stderr.Finish(mask)
		res.FinishedAt = time.Now()
		switch {
		case parent.Err() != nil:
			res.Error = "canceled"
			return res, fmt.Errorf("http %s: %w", req.method, parent.Err())
		case ctx.Err() != nil:
			res.TimedOut = true
			res.Error = fmt.Sprintf("timed out after %s", job.EffectiveTimeout())
			return res, nil
		}
		res.Error = mask.Mask(fmt.Sprintf("%s %s: no response after %d attempts: %v", req.method, req.url, max(attempts, 1), err))
		return res, nil
	}
	defer resp.Body.Close()
	stdout := executor.NewOutput(job.EffectiveOutputLimit())
	fmt.Fprintf(stdout, "%s %s\n", resp.Proto, resp.Status)
	_, _ = io.Copy(stdout, resp.Body)
	res.Stdout, res.StdoutTruncated = stdout.Finish(mask)
	res.Stderr, res.StderrTruncated = stderr.Finish(mask)
	res.ExitCode = 0
	if !expected(resp.StatusCode, req.expect) {
		res.ExitCode = resp.StatusCode
		res.Error = fmt.Sprintf("unexpected status %d", resp.StatusCode)
	}
	res.FinishedAt = time.Now()
	return res, nil
}

// expected reports whether status means success: one of expect, or any 2xx
// when expect is empty.
func expected(status int, expect []int) bool {
	if len(expect) > 0 {
		return slices.Contains(expect, status)
	}
	return status/100 == 2
}

// newClient returns the client of one request: it writes its retries to
// stderr and counts its attempts.
func (h *HTTP) newClient(stderr io.Writer, attempts *int) *retryablehttp.Client {
	client := retryablehttp.NewClient()
	client.Logger = nil
	client.RetryMax = h.opts.RetryMax
	client.RetryWaitMin, client.RetryWaitMax = h.opts.RetryWaitMin, h.opts.RetryWaitMax
	client.HTTPClient.Transport = &http.Transport{TLSClientConfig: h.opts.TLSConfig, Proxy: http.ProxyFromEnvironment}
	client.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			fmt.Fprintf(stderr, "attempt failed: %v\n", err)
			return true, nil
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			fmt.Fprintf(stderr, "attempt answered %s: retrying\n", resp.Status)
			return true, nil
		}
		return false, nil
	}
	client.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, _ int) { *attempts++ }
	client.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return client
}

// newRenderer returns a function rendering one template over the payload.
func newRenderer(p payload.Params, dicts []*payload.Dict) func(what, text string) (string, error) {
	d := data{
		NewPassword: p.NewPassword, OldPassword: p.OldPassword, User: p.User,
		UserRecordUID: p.UserRecordUID, ResourceRecordUID: p.ResourceRecordUID, ProviderRecordUID: p.ProviderRecordUID,
	}
	funcs := template.FuncMap{
		"record": func(titleOrUID, field string) (any, error) {
			for _, r := range dicts {
				if r.String("title") == titleOrUID || r.String("uid") == titleOrUID {
					v, ok := r.Get(field)
					if !ok {
						return nil, fmt.Errorf("record %q has no field %q", titleOrUID, field)
					}
					return v, nil
				}
			}
			return nil, fmt.Errorf("no record titled %q", titleOrUID)
		},
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"urlquery": url.QueryEscape,
		"base64":   func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	}
	return func(what, text string) (string, error) {
		if text == "" {
			return "", nil
		}
		t, err := template.New(what).Option("missingkey=error").Funcs(funcs).Parse(text)
		if err != nil {
			return "", fmt.Errorf("%s template: %w", what, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, d); err != nil {
			// text/template errors quote the template, not the data.
			return "", fmt.Errorf("%s template: %w", what, err)
		}
		return b.String(), nil
	}
}
