package server

import (
	"net/http"
)

// health is GET /healthz: 200 when Options.Health finds the coordinator
// able to store what it must, 503 with the reason otherwise.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.opts.Health != nil {
		if err := s.opts.Health(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
