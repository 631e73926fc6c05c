package origin

import (
	"crypto/subtle"
	"net"
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
			s.logRefusal(r, "http request refused: missing or wrong bearer token")
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
// without an Origin header (non-browser clients) pass; a browser's Origin
// must be in AllowedOrigins, or, when that list is empty, be the origin's
// own configured listen address (scheme http/https/ws/wss, same host and
// port as cfg.Listen; with port 0, the bound port). It never compares
// against the request's Host header, which a DNS-rebinding page controls.
// A listen host of 0.0.0.0, :: or empty matches no browser origin: list
// the page's origin in AllowedOrigins.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && s.isListenOrigin(u)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// isListenOrigin reports whether browser origin u names this origin's
// configured listen address.
func (s *Server) isListenOrigin(u *url.URL) bool {
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return false
	}
	if port == "0" && s.ln != nil {
		_, port, _ = net.SplitHostPort(s.ln.Addr().String())
	}
	up := u.Port()
	if up == "" {
		switch strings.ToLower(u.Scheme) {
		case "http", "ws":
			up = "80"
		case "https", "wss":
			up = "443"
		}
	}
	return strings.EqualFold(u.Hostname(), strings.Trim(host, "[]")) && up == port
}

// wsAuth checks a WebSocket request's bearer token before the upgrade. A
// wrong or missing Authorization header (and no access_token) is refused
// here with 401, before any WebSocket work, and it returns false. A wrong
// ?access_token= (browsers, which cannot set the header and cannot read a
// failed handshake's status) is upgraded and refused with an unauthorized
// frame: it returns true with inFrame set. Refusals are logged at most once
// per 10 s, with a count, never with the token.
func (s *Server) wsAuth(w http.ResponseWriter, r *http.Request) (proceed, inFrame bool) {
	if s.authorized(r) {
		return true, false
	}
	if r.Header.Get("Authorization") == "" && r.URL.Query().Has("access_token") {
		s.logRefusal(r, "websocket refused with an unauthorized frame: wrong access_token")
		return true, true
	}
	s.logRefusal(r, "websocket refused before the upgrade: missing or wrong bearer token")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Bearer realm="pipeline"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"error":"unauthorized: missing or wrong bearer token"}` + "\n"))
	return false, false
}

// logRefusal logs a refused request at most once per 10 s, with how many
// were refused since the last line.
func (s *Server) logRefusal(r *http.Request, msg string) {
	if n, ok := s.authLog.Tick(); ok {
		s.log.Warn().Int64("refused", n).Str("remote", r.RemoteAddr).Msg(msg + " (logged at most every 10 s; refused counts since the last line)")
	}
}
