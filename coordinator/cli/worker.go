package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/messages/envelope"
)

// apiFlags are the flags that reach a running serve's HTTP API.
type apiFlags struct {
	base, tokenFile string
}

func (f *apiFlags) client() (*apiClient, error) { return newClient(f.base, f.tokenFile) }

func newWorker(g *globals) *cobra.Command {
	var api apiFlags
	c := &cobra.Command{
		Use:   "worker",
		Short: "Enroll, list and revoke the workers of a running coordinator",
		Long: `Enroll a worker: 'postrotate worker add HOST' asks the running serve to
create the identity of HOST's worker — a NATS nkey user allowed to run only
HOST's tasks, and a curve key the tasks' secrets are sealed to — and writes
its credentials file (mode 0600), which 'postrotate-worker --creds FILE'
reads. The serve keeps only the public keys; the file is the only copy of
the seeds. Enrolling a host again replaces its identity: the old file
stops working at once.`,
	}
	c.PersistentFlags().StringVar(&api.base, "server", defaultServer, "URL of the postrotate serve HTTP API")
	c.PersistentFlags().StringVar(&api.tokenFile, "api-token-file", "", "file holding the serve's API token (default $"+apiTokenEnv+")")
	c.AddCommand(newWorkerAdd(g, &api), newWorkerRemove(g, &api), newWorkerList(g, &api))
	return c
}

func newWorkerAdd(g *globals, api *apiFlags) *cobra.Command {
	var out, natsURL string
	var natsConfig bool
	add := &cobra.Command{
		Use:   "add HOST [--out FILE] [--nats URL] [--nats-config]",
		Short: "Enroll the worker of HOST and write its credentials",
		Long: `Enroll the worker of HOST and write its credentials: to --out (mode 0600),
or to stdout. Give the file to the worker:

  postrotate worker add gateway-1 --out gateway-1.creds
  postrotate-worker --creds gateway-1.creds

--nats sets the NATS URL the worker connects to (default: the serve's).
--nats-config also prints, on stdout, the authorization block of a
nats-server configuration that admits the coordinator and this worker with
its rights, for an external NATS cluster (serve --nats); it needs --out.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if natsConfig && out == "" {
				return usage(errors.New("--nats-config prints on stdout: write the credentials with --out FILE"))
			}
			en, err := enrollWorker(cmd.Context(), api, args[0])
			if err != nil {
				return err
			}
			creds := en.Credentials
			if natsURL != "" {
				creds.NATS = natsURL
			}
			if err := writeCredentials(g, out, creds); err != nil {
				return err
			}
			noteEnrolled(g, en, creds)
			if natsConfig {
				fmt.Fprintf(g.stdout, "# nats-server configuration: the coordinator's user and the worker of %s\n%s", creds.Host, en.NATSConfig)
			}
			return nil
		},
	}
	add.Flags().StringVarP(&out, "out", "o", "", "write the credentials to this file (mode 0600) instead of stdout")
	add.Flags().StringVar(&natsURL, "nats", "", "NATS URL(s) the worker connects to (default: the one the serve advertises)")
	add.Flags().BoolVar(&natsConfig, "nats-config", false, "print the nats-server authorization block for an external NATS (needs --out)")
	return add
}

// enrollWorker asks the serve to enroll the worker of host.
func enrollWorker(ctx context.Context, api *apiFlags, host string) (identity.Enrolled, error) {
	client, err := api.client()
	if err != nil {
		return identity.Enrolled{}, err
	}
	body, _ := json.Marshal(server.EnrollRequest{Host: host})
	var en identity.Enrolled
	status, err := client.call(ctx, http.MethodPost, "/v1/workers/enroll", body, &en)
	switch {
	case status == http.StatusBadRequest || status == http.StatusConflict:
		return identity.Enrolled{}, usage(err)
	case err != nil:
		return identity.Enrolled{}, &exitError{ExitFailed, err}
	}
	return en, nil
}

// writeCredentials writes creds to the file out (mode 0600), saying how
// to start the worker with it, or to stdout when out is "".
func writeCredentials(g *globals, out string, creds envelope.Credentials) error {
	if out != "" {
		if err := envelope.WriteCredentials(out, creds); err != nil {
			return &exitError{ExitFailed, fmt.Errorf("the worker of %s is enrolled, but its credentials could not be written (enroll it again): %w", creds.Host, err)}
		}
		fmt.Fprintf(g.stderr, "postrotate: enrolled the worker of %s; its credentials are in %s (mode 0600): start it with\n  postrotate-worker --creds %s\n", creds.Host, out, out)
		return nil
	}
	data, err := creds.Encode()
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	if _, err := g.stdout.Write(data); err != nil {
		return &exitError{ExitFailed, err}
	}
	return nil
}

// noteEnrolled tells, on stderr, what the operator should know of an
// enrolment: an identity replaced, a host the inventory sends nothing to,
// credentials without a NATS URL.
func noteEnrolled(g *globals, en identity.Enrolled, creds envelope.Credentials) {
	if en.Replaced {
		fmt.Fprintf(g.stderr, "postrotate: %s had an identity: it is replaced, and the worker that used it is disconnected\n", creds.Host)
	}
	if !en.InInventory {
		fmt.Fprintf(g.stderr, "postrotate: warning: the inventory sends no task to %s\n", creds.Host)
	}
	if creds.NATS == "" {
		fmt.Fprintln(g.stderr, "postrotate: the credentials name no NATS URL: give postrotate-worker --nats URL, or enroll with --nats URL")
	}
}

func newWorkerRemove(g *globals, api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove HOST",
		Short: "Revoke the identity of HOST's worker",
		Long: `Revoke the identity of HOST's worker: its NATS user is shut out at once
(an open connection is closed) and tasks for HOST fail until a worker is
enrolled again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := api.client()
			if err != nil {
				return err
			}
			status, err := client.call(cmd.Context(), http.MethodDelete, "/v1/workers/enrolled/"+url.PathEscape(args[0]), nil, nil)
			switch {
			case status == http.StatusNotFound || status == http.StatusConflict:
				return usage(err)
			case err != nil:
				return &exitError{ExitFailed, err}
			}
			fmt.Fprintf(g.stdout, "revoked the identity of %s's worker\n", args[0])
			return nil
		},
	}
}

func newWorkerList(g *globals, api *apiFlags) *cobra.Command {
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the enrolled workers' identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := api.client()
			if err != nil {
				return err
			}
			var all []identity.Worker
			status, err := client.call(cmd.Context(), http.MethodGet, "/v1/workers/enrolled", nil, &all)
			switch {
			case status == http.StatusConflict:
				return usage(err)
			case err != nil:
				return &exitError{ExitFailed, err}
			}
			if asJSON {
				return json.NewEncoder(g.stdout).Encode(all)
			}
			return printWorkers(g, all)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return list
}

// printWorkers prints the enrolled workers as a table.
func printWorkers(g *globals, all []identity.Worker) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNATS USER\tCURVE KEY\tENROLLED")
	for _, w := range all {
		host := w.Host
		if w.Local {
			host += " (in-process)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", host, w.UserKey, w.CurveKey, w.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
