package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/postrotate/postrotate/coordinator/identity"
)

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
	en, err := s.enroller().Enroll(r.Context(), req.Host)
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
	all, err := s.enroller().Workers(r.Context())
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
	err := s.enroller().Revoke(r.Context(), r.PathValue("host"))
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

// enroller returns the worker enrolment, or one that refuses every call
// with ErrUnsigned when tasks are sent unsigned.
func (s *Server) enroller() enroller {
	if s.opts.Enroller == nil {
		return unsigned{}
	}
	return s.opts.Enroller
}

// enroller is what the enrolment routes need of identity.Enroller.
type enroller interface {
	Enroll(ctx context.Context, host string) (identity.Enrolled, error)
	Workers(ctx context.Context) ([]identity.Worker, error)
	Revoke(ctx context.Context, host string) error
}

// unsigned refuses enrolment: tasks travel unsigned.
type unsigned struct{}

func (unsigned) Enroll(context.Context, string) (identity.Enrolled, error) {
	return identity.Enrolled{}, ErrUnsigned
}
func (unsigned) Workers(context.Context) ([]identity.Worker, error) { return nil, ErrUnsigned }
func (unsigned) Revoke(context.Context, string) error               { return ErrUnsigned }
