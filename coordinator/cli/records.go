package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/server"
)

// defaultServer is the address `postrotate serve` listens on by default.
const defaultServer = "http://127.0.0.1:7480"

func newRecords(g *globals) *cobra.Command {
	var base, tokenFile string
	var asJSON bool
	c := &cobra.Command{
		Use:   "records",
		Short: "Show the records of a running coordinator's record store",
		Long: `Show the records postrotate serve keeps: where each password comes
from (the inventory, or a rotation), the password history, the schedule and
the next and last rotation. Secrets are shown only with 'get --reveal'.`,
	}
	c.PersistentFlags().StringVar(&base, "server", defaultServer, "URL of the postrotate serve HTTP API")
	c.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")
	c.PersistentFlags().StringVar(&tokenFile, "api-token-file", "", "file holding the serve's API token (default $"+apiTokenEnv+")")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the stored records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var all []server.RecordSummary
			client, err := newClient(base, tokenFile)
			if err != nil {
				return err
			}
			if _, err := client.call(cmd.Context(), http.MethodGet, "/v1/records", nil, &all); err != nil {
				return &exitError{ExitFailed, err}
			}
			if asJSON {
				return json.NewEncoder(g.stdout).Encode(all)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "UID\tTYPE\tTITLE\tPASSWORD FROM\tSET AT\tNEXT ROTATION\tLAST ROTATION")
			for _, r := range all {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.UID, r.Type, dash(r.Title), dash(r.Source), when(r.PasswordSetAt), when(r.NextRotation), last(r))
			}
			return tw.Flush()
		},
	}
	var reveal bool
	get := &cobra.Command{
		Use:   "get UID",
		Short: "Show one record, its password history and its schedule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u := "/v1/records/" + url.PathEscape(args[0])
			if reveal {
				u += "?reveal=true"
			}
			var v server.RecordView
			client, err := newClient(base, tokenFile)
			if err != nil {
				return err
			}
			status, err := client.call(cmd.Context(), http.MethodGet, u, nil, &v)
			switch {
			case status == http.StatusNotFound:
				return usage(err)
			case err != nil:
				return &exitError{ExitFailed, err}
			}
			if asJSON {
				return json.NewEncoder(g.stdout).Encode(v)
			}
			printRecord(g, v)
			return nil
		},
	}
	get.Flags().BoolVar(&reveal, "reveal", false, "show the password, the history's passwords and secret fields")
	c.AddCommand(list, get)
	return c
}

func printRecord(g *globals, v server.RecordView) {
	w := g.stdout
	fmt.Fprintf(w, "%s (%s) %s\n", v.UID, v.Type, v.Title)
	if !v.InInventory {
		fmt.Fprintln(w, "  not in the inventory applied last (kept: it may hold the only copy of a rotated password)")
	}
	if v.Password != "" {
		fmt.Fprintf(w, "  password: %s (from %s, set %s)\n", v.Password, v.Source, when(v.PasswordSetAt))
	}
	if v.Schedule != "" {
		fmt.Fprintf(w, "  schedule: %s; next rotation: %s\n", v.Schedule, when(v.NextRotation))
	}
	if v.LastRotation != nil {
		fmt.Fprintf(w, "  last rotation: %s\n", last(v.RecordSummary))
	}
	fmt.Fprintln(w, "  fields:")
	for _, f := range v.Fields {
		name := f.Type
		if f.Label != "" {
			name += " (" + f.Label + ")"
		}
		val, _ := json.Marshal(f.Value)
		fmt.Fprintf(w, "    %s: %s\n", name, val)
	}
	if p := v.Pending; p != nil {
		fmt.Fprintf(w, "  pending: %s  rotation %s (running since %s: becomes the password, or an uncommitted entry, when it ends)\n", p.Password, p.RotationID, when(p.SetAt))
	}
	if len(v.History) > 0 {
		fmt.Fprintln(w, "  password history (newest first):")
		for _, h := range v.History {
			rot := ""
			if h.RotationID != "" {
				rot = " rotation " + h.RotationID
			}
			mark := ""
			if h.Source == "uncommitted" {
				mark = "  (may be on a target: the rotation did not take effect)"
			}
			fmt.Fprintf(w, "    %s  %s  from %s%s%s\n", when(h.SetAt), h.Password, h.Source, rot, mark)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func last(r server.RecordSummary) string {
	if r.LastRotation == nil {
		return "-"
	}
	return fmt.Sprintf("%s %s %s (%s)", when(r.LastRotation.At), r.LastRotation.ID, r.LastRotation.State, r.LastRotation.Note)
}
