package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/messages"
)

// printOutcome writes the results as a table (or JSON) to w.
func printOutcome(w io.Writer, out rotation.Outcome, asJSON, verbose bool) error {
	if asJSON {
		results := out.Results
		if results == nil {
			results = []messages.RotationResult{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tRECORD\tSCRIPT\tHOST\tRESULT\tEXIT\tDURATION")
	for _, r := range out.Results {
		status := "ok"
		if !r.Success {
			status = "FAILED"
		}
		exit := fmt.Sprint(r.ExitCode)
		if r.ExitCode < 0 {
			exit = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Step, r.UID, r.Title, r.Host, status, exit,
			(time.Duration(r.DurationMS) * time.Millisecond).String())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range out.Results {
		if !verbose && r.Success {
			continue
		}
		fmt.Fprintf(w, "\nstep %d: %s on %s\n", r.Step, r.Title, r.Host)
		if r.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", r.Error)
		}
		if verbose {
			writeStream(w, "stdout", r.Stdout, r.StdoutTruncated, 0)
			writeStream(w, "stderr", r.Stderr, r.StderrTruncated, 0)
		} else {
			writeStream(w, "stderr", r.Stderr, r.StderrTruncated, 10)
		}
	}
	fmt.Fprintf(w, "\nrotation %s: %d of %d steps succeeded\n", out.RotationID, out.Succeeded, len(out.Results))
	if out.Effect != "" {
		fmt.Fprintf(w, "password: %s (%s)\n", strings.ReplaceAll(string(out.Effect), "_", " "), out.Note)
	}
	return nil
}

// writeStream prints a stream indented, its last maxLines lines (0 = all).
func writeStream(w io.Writer, name, s string, truncated bool, maxLines int) {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return
	}
	lines := strings.Split(s, "\n")
	note := ""
	if truncated {
		note = " (truncated)"
	}
	if maxLines > 0 && len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
		note += fmt.Sprintf(" (last %d lines)", maxLines)
	}
	fmt.Fprintf(w, "  %s%s:\n", name, note)
	for _, l := range lines {
		fmt.Fprintf(w, "    %s\n", l)
	}
}
