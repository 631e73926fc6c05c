package origin

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/broker"
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
			if s.logRefusal(r, "http request refused: missing or wrong bearer token") {
				w.Header().Set("Connection", "close") // its source is blocked: no keep-alive either
			}
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
// per 10 s, with a count, never with the token. Each refusal counts
// against the request's source address (RefusalLimits); once the source is
// blocked, a 401 also closes its connection.
func (s *Server) wsAuth(w http.ResponseWriter, r *http.Request) (proceed, inFrame bool) {
	if s.authorized(r) {
		return true, false
	}
	if r.Header.Get("Authorization") == "" && r.URL.Query().Has("access_token") {
		s.logRefusal(r, "websocket refused with an unauthorized frame: wrong access_token")
		return true, true
	}
	if s.logRefusal(r, "websocket refused before the upgrade: missing or wrong bearer token") {
		w.Header().Set("Connection", "close") // its source is blocked: no keep-alive either
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Bearer realm="pipeline"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"error":"unauthorized: missing or wrong bearer token"}` + "\n"))
	return false, false
}

// logRefusal records a refused request: it counts it against its source
// address (refusals.go) and logs it at most once per 10 s, with how many
// were refused since the last line. It reports whether the source is
// blocked now; the caller then closes the connection after its answer.
func (s *Server) logRefusal(r *http.Request, msg string) (sourceBlocked bool) {
	if n, ok := s.authLog.Tick(); ok {
		s.log.Warn().Int64("refused", n).Str("remote", r.RemoteAddr).Msg(msg + " (logged at most every 10 s; refused counts since the last line)")
	}
	return s.refusals.refused(r.RemoteAddr)
}

// unauthorizedFrames are the server-to-client WebSocket frames that refuse a
// wrong ?access_token=: the unauthorized error frame (text, unmasked), then
// a close frame with 1008 "unauthorized". Built once; the same bytes for
// every refusal.
var unauthorizedFrames = func() []byte {
	text := encodeError("", "", broker.Errorf(broker.CodeUnauthorized, "missing or wrong bearer token"))
	closing := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "unauthorized")
	if len(text) > 125 || len(closing) > 125 {
		panic("origin: unauthorized frames must fit a one-byte length")
	}
	b := append([]byte{0x81, byte(len(text))}, text...) // FIN | text
	b = append(b, 0x88, byte(len(closing)))             // FIN | close
	return append(b, closing...)
}()

// websocketGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// refuseInFrame answers a well-formed WebSocket handshake whose
// ?access_token= is wrong: the 101 response, the unauthorized error frame
// and the 1008 close frame in one write on the hijacked connection, which is
// then closed. It does no more WebSocket work than that (no gorilla
// connection, no session, no buffers), so a flood of wrong tokens costs the
// origin as little as a flood of 401s plus one write. Any other request
// (not a plain valid handshake, or failing the browser-origin check) goes
// through the upgrader, which answers a bad one with its usual HTTP error
// and a good one gets the same two frames through gorilla.
func (s *Server) refuseInFrame(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) || len(key) != 24 ||
		r.Header.Get("Sec-WebSocket-Version") != "13" || !s.checkOrigin(r) {
		conn, err := s.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // refused with an HTTP error by the upgrader
		}
		defer conn.Close()
		_ = conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.UnderlyingConn().Write(unauthorizedFrames)
		return
	}
	rc := http.NewResponseController(w)
	netConn, brw, err := rc.Hijack()
	if err != nil {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	defer netConn.Close()
	if brw.Reader.Buffered() > 0 {
		return // the client sent frames before the handshake's answer: not a client worth one
	}
	sum := sha1.Sum([]byte(key + websocketGUID))
	buf := make([]byte, 0, 160+len(unauthorizedFrames))
	buf = append(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	buf = base64.StdEncoding.AppendEncode(buf, sum[:])
	buf = append(buf, "\r\n\r\n"...)
	buf = append(buf, unauthorizedFrames...)
	_ = netConn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = netConn.Write(buf)
}
