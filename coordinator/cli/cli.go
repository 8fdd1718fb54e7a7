// Package cli is the postrotate command line: rotate, validate, version.
//
// Exit status: 0 when every script succeeded, 1 when any failed (or the
// rotation could not complete), 2 on bad input or usage, with the reason on
// stderr.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/oneshot"
	"github.com/postrotate/postrotate/coordinator/rotation"
)

// Exit statuses.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// exitError carries an exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usage(err error) error { return &exitError{ExitUsage, err} }

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mainContext(ctx, args, stdout, stderr)
}

// mainContext is Main with its context: ending ctx is a signal.
func mainContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != errSilent {
			fmt.Fprintf(stderr, "postrotate: %v\n", ee.err)
		}
		return ee.code
	}
	// Cobra's own errors: unknown command or flag, bad flag value.
	fmt.Fprintf(stderr, "postrotate: %v\nRun 'postrotate --help' for usage.\n", err)
	return ExitUsage
}

// errSilent ends a command with a status whose reason was already printed.
var errSilent = errors.New("")

type globals struct {
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func (g *globals) logger() (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(g.logLevel)
	if err != nil {
		return zerolog.Nop(), usage(fmt.Errorf("--log-level %q: %w", g.logLevel, err))
	}
	w := zerolog.ConsoleWriter{Out: g.stderr, TimeFormat: "15:04:05.000", NoColor: true}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "postrotate",
		Short: "Run post-rotation scripts across a fleet",
		Long: `postrotate runs post-rotation scripts (Keeper "PAM Scripts") after a credential
is rotated: in order, on the right host, with the old and new credential on
stdin, and reports a RotationResult for every script.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level on stderr: trace, debug, info, warn, error, disabled")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usage(fmt.Errorf("%w\nRun '%s --help' for usage", err, c.CommandPath()))
	})
	root.AddCommand(newRotate(g), newServe(g), newRecords(g), newWorker(g), newValidate(g), newVersion(g))
	return root
}

func newVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(g.stdout, "postrotate", Version)
			return nil
		},
	}
}

func newValidate(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "validate --inventory FILE",
		Short: "Check an inventory file and list every problem",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			inv, err := loadInventory(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: ok (%d records)\n", file, len(inv.Records))
			return nil
		},
	}
	c.Flags().StringVarP(&file, "inventory", "i", "", "inventory file (YAML or JSON)")
	_ = c.MarkFlagRequired("inventory")
	return c
}

// loadInventory loads and validates an inventory; problems are usage errors.
func loadInventory(file string) (*inventory.Inventory, error) {
	inv, err := inventory.Load(file)
	if err != nil {
		var ve *inventory.ValidationError
		if errors.As(err, &ve) {
			return nil, usage(fmt.Errorf("inventory %s is invalid (%d problems):\n%w", file, len(ve.Problems), err))
		}
		return nil, usage(fmt.Errorf("inventory %s: %w", file, err))
	}
	return inv, nil
}

func newRotate(g *globals) *cobra.Command {
	var (
		file, user, serverURL, tokenFile string
		asJSON, verbose, wait            bool
		timeout                          time.Duration
	)
	c := &cobra.Command{
		Use:   "rotate (--inventory FILE | --server URL) --user UID [--json] [--wait]",
		Short: "Rotate one PAM User and run its post-rotation scripts",
		Long: `Rotate the PAM User UID: generate its new password and run every
post-rotation script in order (user, then resource, then configuration),
reporting one RotationResult per script.

With --inventory, everything runs in this process: an embedded NATS
JetStream and an in-process worker per host. With --server, the rotation is
started on a running 'postrotate serve'; --wait waits for it to finish and
prints its results.

Exit status: 0 every script succeeded (or, without --wait, the rotation
started), 1 a script failed, 2 bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			switch {
			case user == "":
				return usage(errors.New(`required flag "user" not set`))
			case (file == "") == (serverURL == ""):
				return usage(errors.New("give exactly one of --inventory (one-shot) and --server (a running postrotate serve)"))
			case serverURL != "":
				client, err := newClient(serverURL, tokenFile)
				if err != nil {
					return err
				}
				return rotateRemote(cmd.Context(), g, client, user, asJSON, verbose, wait, timeout)
			}
			inv, err := loadInventory(file)
			if err != nil {
				return err
			}
			out, err := oneshot.Rotate(cmd.Context(), inv, user, oneshot.Options{Logger: &log})
			var ie *rotation.InputError
			if errors.As(err, &ie) {
				return usage(err)
			}
			return report(g, out, err, asJSON, verbose)
		},
	}
	c.Flags().StringVarP(&file, "inventory", "i", "", "inventory file (YAML or JSON): run the rotation in this process")
	c.Flags().StringVarP(&serverURL, "server", "s", "", "URL of a running postrotate serve (e.g. http://127.0.0.1:7480)")
	c.Flags().StringVarP(&user, "user", "u", "", "uid of the PAM User record to rotate")
	c.Flags().BoolVar(&asJSON, "json", false, "print the JSON array of RotationResults, in execution order")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every script's stdout and stderr under the table")
	c.Flags().BoolVar(&wait, "wait", false, "with --server: wait for the rotation to finish and print its results")
	c.Flags().DurationVar(&timeout, "wait-timeout", time.Hour, "with --wait: give up waiting after this long")
	c.Flags().StringVar(&tokenFile, "api-token-file", "", "with --server: file holding the serve's API token (default $"+apiTokenEnv+")")
	return c
}

// report prints a finished rotation and turns it into an exit status.
func report(g *globals, out rotation.Outcome, err error, asJSON, verbose bool) error {
	if len(out.Results) > 0 || err == nil {
		if perr := printOutcome(g.stdout, out, asJSON, verbose); perr != nil {
			return &exitError{ExitFailed, perr}
		}
	}
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("rotation %s: %w", out.RotationID, err)}
	}
	if !out.Success() {
		return &exitError{ExitFailed, errSilent}
	}
	return nil
}
