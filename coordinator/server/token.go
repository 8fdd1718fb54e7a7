package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authorize requires Options.APIToken as a bearer token on every request
// but GET /healthz. The comparison takes the same time whatever the token
// sent (both sides are hashed first, so that not even the length leaks).
func (s *Server) authorize(next http.Handler) http.Handler {
	if s.opts.APIToken == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.APIToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := bearer(r.Header.Get("Authorization"))
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !ok {
			s.log.Warn().Str("remote", r.RemoteAddr).Str("method", r.Method).Str("path", r.URL.Path).Bool("token_sent", ok).
				Msg("http request refused: missing or wrong API token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="postrotate"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API token (Authorization: Bearer <token>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
