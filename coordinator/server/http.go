package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// Handler returns the HTTP API:
//
//	POST /v1/rotations        {"user": "UID"} → 202 and the run (409 when the user has one running)
//	GET  /v1/rotations/{id}   the run and the results of its steps so far
//	GET  /v1/rotations?user=  the runs, newest first
//	GET  /v1/workers          the registered, live workers
//	GET  /v1/records          the stored records: password source, schedule, next and last rotation
//	GET  /v1/records/{uid}    one record with its fields and password history (?reveal=true shows the secrets)
//	POST /v1/workers/enroll   {"host": "ID"} → 201 and the worker's new credentials (given once)
//	GET  /v1/workers/enrolled the enrolled workers' public identities
//	DELETE /v1/workers/enrolled/{host}  revoke a worker's identity → 204
//	GET  /healthz             200 when the broker answers
//
// With Options.APIToken, every request but GET /healthz must carry
// "Authorization: Bearer <token>"; 401 otherwise.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/rotations", s.postRotation)
	mux.HandleFunc("GET /v1/rotations/{id}", s.getRotation)
	mux.HandleFunc("GET /v1/rotations", s.listRotations)
	mux.HandleFunc("GET /v1/workers", s.listWorkers)
	mux.HandleFunc("GET /v1/records", s.listRecords)
	mux.HandleFunc("GET /v1/records/{uid}", s.getRecord)
	mux.HandleFunc("POST /v1/workers/enroll", s.postEnroll)
	mux.HandleFunc("GET /v1/workers/enrolled", s.listEnrolled)
	mux.HandleFunc("DELETE /v1/workers/enrolled/{host}", s.deleteEnrolled)
	mux.HandleFunc("GET /healthz", s.health)
	return s.authorize(mux)
}

// RotateRequest is the body of POST /v1/rotations.
type RotateRequest struct {
	User string `json:"user"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, ErrorBody{Error: fmt.Sprintf(format, args...)})
}

func (s *Server) postRotation(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "content type %q: want application/json", ct)
		return
	}
	var req RotateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	if req.User == "" {
		writeError(w, http.StatusBadRequest, `request body: "user" is required`)
		return
	}
	run, err := s.opts.Rotations.Rotate(r.Context(), req.User)
	var (
		ie *rotation.InputError
		be *runs.BusyError
	)
	switch {
	case errors.As(err, &be):
		writeError(w, http.StatusConflict, "%v", err)
	case errors.As(err, &ie) && (errors.Is(err, plan.ErrUnknownRecord) || errors.Is(err, plan.ErrNotPAMUser)):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.As(err, &ie):
		writeError(w, http.StatusUnprocessableEntity, "%v", err)
	case err != nil:
		s.log.Error().Err(err).Msg("start rotation")
		writeError(w, http.StatusInternalServerError, "start rotation: %v", err)
	default:
		w.Header().Set("Location", "/v1/rotations/"+run.ID)
		writeJSON(w, http.StatusAccepted, run)
	}
}

func (s *Server) getRotation(w http.ResponseWriter, r *http.Request) {
	v, err := s.opts.Rotations.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, runs.ErrNotFound):
		writeError(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) listRotations(w http.ResponseWriter, r *http.Request) {
	all, err := s.opts.Rotations.List(r.Context(), r.URL.Query().Get("user"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if all == nil {
		all = []runs.Run{}
	}
	writeJSON(w, http.StatusOK, all)
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	all, err := s.opts.Workers(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, all)
}
