// Package server is the coordinator's HTTP API (`postrotate serve`): its
// handlers turn requests into calls of the rotation service (package
// rotation), the record store (package vault) and the worker enrolment
// (package identity), and their answers into JSON. With an API token,
// every request but GET /healthz must carry it.
package server

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
)

// Options configure a Server. A zero field means its default.
type Options struct {
	// Rotations starts and reads rotations. Required.
	Rotations *rotation.Service
	// Records is the record store. Required.
	Records *vault.Store
	// Enroller enrols workers; nil when tasks are sent unsigned (serve
	// --insecure-workers): enrolment is refused with ErrUnsigned.
	Enroller *identity.Enroller
	// Workers returns the registered, live workers. Required.
	Workers func(context.Context) ([]messages.WorkerInfo, error)
	// Health answers GET /healthz: nil when the coordinator can store
	// what it must, else why not (503). Nil means always healthy.
	Health func(context.Context) error
	// NextRotation returns when the scheduler fires user's rotation next.
	// Optional.
	NextRotation func(user string) (time.Time, bool)
	// APIToken, when set, must come as "Authorization: Bearer <token>"
	// with every HTTP request but GET /healthz.
	APIToken string
	// Logger receives the server's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
}

// Server is the HTTP API.
type Server struct {
	opts Options
	log  zerolog.Logger
}

// ErrUnsigned is returned by the enrolment routes of a server that sends
// tasks unsigned (Options.Enroller nil): its workers need no credentials.
var ErrUnsigned = errors.New("this coordinator sends tasks unsigned (serve --insecure-workers): workers need no credentials")

// New returns the HTTP API over opts' services.
func New(opts Options) (*Server, error) {
	if opts.Rotations == nil || opts.Records == nil || opts.Workers == nil {
		return nil, errors.New("server: Rotations, Records and Workers are required")
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Server{opts: opts, log: log.With().Str("component", "http").Logger()}, nil
}
