package origin

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// authorized reports whether r carries the configured bearer token, in the
// Authorization header or (for browsers, which cannot set headers on a
// WebSocket) the access_token query parameter. With no token configured
// every request is authorized.
func (s *Server) authorized(r *http.Request) bool {
	want := s.cfg.AuthToken
	if want == "" {
		return true
	}
	got := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		got = h[7:]
	} else {
		got = r.URL.Query().Get("access_token")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// requireAuth wraps h with the bearer-token check; refusals are 401 with a
// JSON error body.
func (s *Server) requireAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="pipeline"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"unauthorized: missing or wrong bearer token"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkOrigin is the WebSocket upgrader's browser-origin check: requests
// without an Origin header (non-browser clients) pass; a browser's Origin must
// be in AllowedOrigins, or, when that list is empty, match the Host.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}
