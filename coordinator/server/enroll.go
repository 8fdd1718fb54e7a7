package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/messages/envelope"
)

// ErrUnsigned is returned by Enroll and LocalWorker on a server that sends
// tasks unsigned (Options.Unsigned): its workers need no credentials.
var ErrUnsigned = errors.New("this coordinator sends tasks unsigned (serve --insecure-workers): workers need no credentials")

// openIdentities opens the identities bucket, loads the coordinator's
// identity (created on first start) and hands the enrolled workers to
// OnWorkers.
func (s *Server) openIdentities(ctx context.Context) error {
	layout := s.opts.Dispatch.Layout
	ids, err := identity.Open(ctx, s.js, identity.Options{
		Subjects: layout.Subjects, Key: s.opts.Key, Replicas: layout.Replicas, Storage: layout.Storage, Now: s.opts.Now,
	})
	if err != nil {
		return err
	}
	coord, err := ids.Coordinator(ctx)
	if err != nil {
		return fmt.Errorf("the coordinator's identity: %w", err)
	}
	s.ids, s.coord = ids, coord
	sign, curve := coord.PublicKeys()
	s.log.Info().Str("signing_key", sign).Str("curve_key", curve).Msg("coordinator identity loaded")
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.notifyWorkers(ctx)
}

// notifyWorkers gives OnWorkers the enrolled workers. idMu is held.
func (s *Server) notifyWorkers(ctx context.Context) error {
	if s.opts.OnWorkers == nil {
		return nil
	}
	all, err := s.ids.Workers(ctx)
	if err != nil {
		return err
	}
	if err := s.opts.OnWorkers(all); err != nil {
		return fmt.Errorf("admit the enrolled workers: %w", err)
	}
	return nil
}

// workerKey is the dispatcher's WorkerKey: the curve key of host's
// enrolled worker.
func (s *Server) workerKey(ctx context.Context, host string) (string, error) {
	k, err := s.ids.CurveKey(ctx, host)
	if errors.Is(err, identity.ErrNotEnrolled) {
		return "", fmt.Errorf("%w: %w", dispatch.ErrNoWorkerKey, err)
	}
	return k, err
}

// Enrolled is a worker's new identity, as POST /v1/workers/enroll returns
// it. Its Credentials hold the worker's seeds: they are given once, and
// the coordinator does not keep them.
type Enrolled struct {
	Credentials envelope.Credentials `json:"credentials"`
	// Worker is the identity's public part, as stored.
	Worker identity.Worker `json:"worker"`
	// Replaced is set when the host had an identity, which no longer
	// works.
	Replaced bool `json:"replaced"`
	// InInventory says whether the inventory sends tasks to the host.
	InInventory bool `json:"in_inventory"`
	// NATSConfig is the authorization block of a nats-server
	// configuration that admits the coordinator and this worker with its
	// rights, for an external NATS (the embedded server admits the worker
	// at once).
	NATSConfig string `json:"nats_config"`
}

// Enroll creates the identity of host's worker (see identity.Store.Enroll),
// has OnWorkers admit it and returns its credentials.
func (s *Server) Enroll(ctx context.Context, host string) (Enrolled, error) {
	if s.ids == nil {
		return Enrolled{}, ErrUnsigned
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	en, err := s.ids.Enroll(ctx, host)
	if err != nil {
		return Enrolled{}, err
	}
	if err := s.notifyWorkers(ctx); err != nil {
		return Enrolled{}, err
	}
	subj := s.opts.Dispatch.Layout.Subjects
	coordUser, _ := identity.CoordinatorUser(*s.opts.Key).PublicKey()
	s.log.Info().Str("host", host).Str("user_key", en.UserKey).Str("curve_key", en.CurveKey).Bool("replaced", en.Replaced).
		Msg("worker enrolled")
	return Enrolled{
		Credentials: identity.Credentials(en, s.coord, subj, s.opts.NATSURL),
		Worker:      en.Worker,
		Replaced:    en.Replaced,
		InInventory: slices.Contains(Hosts(s.opts.Inventory), host),
		NATSConfig:  broker.Config(identity.Users(subj, coordUser, []identity.Worker{en.Worker})),
	}, nil
}

// LocalWorker returns the credentials of the in-process worker of host
// (`serve --local-workers`), enrolling it the first time (see
// identity.Store.Local), and has OnWorkers admit it.
func (s *Server) LocalWorker(ctx context.Context, host string) (envelope.Credentials, error) {
	if s.ids == nil {
		return envelope.Credentials{}, ErrUnsigned
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	en, err := s.ids.Local(ctx, host)
	if err != nil {
		return envelope.Credentials{}, err
	}
	if !en.Kept {
		if err := s.notifyWorkers(ctx); err != nil {
			return envelope.Credentials{}, err
		}
	}
	if en.Replaced {
		s.log.Warn().Str("host", host).Msg("the enrolled identity of this host was replaced by the in-process worker's")
	}
	return identity.Credentials(en, s.coord, s.opts.Dispatch.Layout.Subjects, s.opts.NATSURL), nil
}

// Revoke deletes the identity of host's worker and has OnWorkers shut its
// user out. It returns an error wrapping identity.ErrNotEnrolled when the
// host has none.
func (s *Server) Revoke(ctx context.Context, host string) error {
	if s.ids == nil {
		return ErrUnsigned
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if err := s.ids.Revoke(ctx, host); err != nil {
		return err
	}
	s.log.Info().Str("host", host).Msg("worker identity revoked")
	return s.notifyWorkers(ctx)
}

// EnrolledWorkers returns the public identities of the enrolled workers.
func (s *Server) EnrolledWorkers(ctx context.Context) ([]identity.Worker, error) {
	if s.ids == nil {
		return nil, ErrUnsigned
	}
	return s.ids.Workers(ctx)
}

// EnrollRequest is the body of POST /v1/workers/enroll.
type EnrollRequest struct {
	Host string `json:"host"`
}

func (s *Server) postEnroll(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "content type %q: want application/json", ct)
		return
	}
	var req EnrollRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	en, err := s.Enroll(r.Context(), req.Host)
	switch {
	case errors.Is(err, identity.ErrInvalidHost):
		writeError(w, http.StatusBadRequest, `request body: "host": %v`, err)
	case errors.Is(err, ErrUnsigned):
		writeError(w, http.StatusConflict, "%v", err)
	case err != nil:
		s.log.Error().Err(err).Str("host", req.Host).Msg("enroll worker")
		writeError(w, http.StatusInternalServerError, "enroll worker: %v", err)
	default:
		s.log.Info().Str("host", req.Host).Str("remote", r.RemoteAddr).Msg("worker credentials handed out")
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusCreated, en)
	}
}

func (s *Server) listEnrolled(w http.ResponseWriter, r *http.Request) {
	all, err := s.EnrolledWorkers(r.Context())
	switch {
	case errors.Is(err, ErrUnsigned):
		writeError(w, http.StatusConflict, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		if all == nil {
			all = []identity.Worker{}
		}
		writeJSON(w, http.StatusOK, all)
	}
}

func (s *Server) deleteEnrolled(w http.ResponseWriter, r *http.Request) {
	err := s.Revoke(r.Context(), r.PathValue("host"))
	switch {
	case errors.Is(err, identity.ErrNotEnrolled):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrUnsigned):
		writeError(w, http.StatusConflict, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
