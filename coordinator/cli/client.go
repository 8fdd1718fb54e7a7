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

	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
)

// rotateRemote starts a rotation on a running server and, with wait,
// follows it to its end.
func rotateRemote(ctx context.Context, g *globals, base, user string, asJSON, verbose, wait bool, timeout time.Duration) error {
	base = strings.TrimRight(base, "/")
	client := &http.Client{Timeout: 30 * time.Second}
	body, _ := json.Marshal(server.RotateRequest{User: user})
	var run runs.Run
	status, err := call(ctx, client, http.MethodPost, base+"/v1/rotations", body, &run)
	switch {
	case status == http.StatusNotFound || status == http.StatusUnprocessableEntity || status == http.StatusBadRequest || status == http.StatusConflict:
		return usage(err) // the request was refused: its reason is in err
	case err != nil:
		return &exitError{ExitFailed, err}
	}
	if !wait {
		if asJSON {
			return json.NewEncoder(g.stdout).Encode(run)
		}
		fmt.Fprintf(g.stdout, "rotation %s started for %s (%d steps); follow it with: GET %s/v1/rotations/%s\n",
			run.ID, run.User, len(run.Steps), base, run.ID)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var v server.View
		if _, err := call(ctx, client, http.MethodGet, base+"/v1/rotations/"+run.ID, nil, &v); err != nil && ctx.Err() == nil {
			fmt.Fprintf(g.stderr, "postrotate: %v (retrying)\n", err)
		} else if err == nil && v.Finished() {
			out := dispatch.Outcome{RotationID: v.ID, Results: v.Results, Succeeded: v.Succeeded, Failed: v.Failed,
				Effect: dispatch.Effect(v.Effect), Note: v.Note, Unresolved: v.Unresolved}
			var runErr error
			if v.Error != "" {
				runErr = errors.New(v.Error)
			}
			return report(g, out, runErr, asJSON, verbose)
		}
		select {
		case <-ctx.Done():
			return &exitError{ExitFailed, fmt.Errorf("rotation %s: still running after %s (%w)", run.ID, timeout, ctx.Err())}
		case <-tick.C:
		}
	}
}

// call does one API request; a non-2xx answer's message is returned in the error.
func call(ctx context.Context, client *http.Client, method, url string, body []byte, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb server.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, eb.Error)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, url, err)
	}
	return resp.StatusCode, nil
}
