package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
)

// apiClient calls the HTTP API of a running `postrotate serve`.
type apiClient struct {
	base  string // without a trailing slash
	token string // the API token, or ""
	http  *http.Client
}

// newClient returns a client of the API at base, with the API token of
// tokenFile, else of $POSTROTATE_API_TOKEN, else none.
func newClient(base, tokenFile string) (*apiClient, error) {
	token, err := clientToken(tokenFile)
	if err != nil {
		return nil, usage(err)
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// rotateRemote starts a rotation on a running server and, with wait,
// follows it to its end.
func rotateRemote(ctx context.Context, g *globals, c *apiClient, user string, asJSON, verbose, wait bool, timeout time.Duration) error {
	body, _ := json.Marshal(server.RotateRequest{User: user})
	var run runs.Run
	status, err := c.call(ctx, http.MethodPost, "/v1/rotations", body, &run)
	switch {
	case status == http.StatusNotFound || status == http.StatusUnprocessableEntity || status == http.StatusBadRequest || status == http.StatusConflict:
		return usage(err) // the request was refused: its reason is in err
	case err != nil:
		return &exitError{ExitFailed, err}
	}
	if wait {
		return c.follow(ctx, g, run.ID, asJSON, verbose, timeout)
	}
	if asJSON {
		return json.NewEncoder(g.stdout).Encode(run)
	}
	fmt.Fprintf(g.stdout, "rotation %s started for %s (%d steps); follow it with: GET %s/v1/rotations/%s\n",
		run.ID, run.User, len(run.Steps), c.base, run.ID)
	return nil
}

// follow polls run id until it is finished, then reports its outcome; it
// gives up after timeout.
func (c *apiClient) follow(ctx context.Context, g *globals, id string, asJSON, verbose bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var v rotation.View
		if _, err := c.call(ctx, http.MethodGet, "/v1/rotations/"+id, nil, &v); err != nil && ctx.Err() == nil {
			fmt.Fprintf(g.stderr, "postrotate: %v (retrying)\n", err)
		} else if err == nil && v.Finished() {
			return reportView(g, v, asJSON, verbose)
		}
		select {
		case <-ctx.Done():
			return &exitError{ExitFailed, fmt.Errorf("rotation %s: still running after %s (%w)", id, timeout, ctx.Err())}
		case <-tick.C:
		}
	}
}

// reportView reports a finished run as a one-shot rotation is reported.
func reportView(g *globals, v rotation.View, asJSON, verbose bool) error {
	out := rotation.Outcome{RotationID: v.ID, Results: v.Results, Succeeded: v.Succeeded, Failed: v.Failed,
		Effect: rotation.Effect(v.Effect), Note: v.Note, Unresolved: v.Unresolved}
	var runErr error
	if v.Error != "" {
		runErr = errors.New(v.Error)
	}
	return report(g, out, runErr, asJSON, verbose)
}

// call does one API request on path; a non-2xx answer's message is
// returned in the error, a 401 with a hint about the token. out may be nil
// for an answer without a body.
func (c *apiClient) call(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	url := c.base + path
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (give the serve's API token: --api-token-file FILE or $" + apiTokenEnv + ")"
		}
		var eb server.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %s%s", method, url, resp.Status, eb.Error, hint)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %s%s", method, url, resp.Status, hint)
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, url, err)
	}
	return resp.StatusCode, nil
}
