package runtime

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	stdlog "log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/httpserve"
	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// DefaultHTTPAddr is where the runtime's HTTP side listens by default.
const DefaultHTTPAddr = "127.0.0.1:8788"

// NewHTTPHandler returns the runtime's HTTP side for reg's functions (nil:
// NewRegistry(Limits{})): POST /rpc/<fn> runs fn on the request body and
// replies 200 with the function's reply body. Errors are JSON
// {"error":"..."} with status 400 (bad input), 404 (unknown function or
// path), 405 (not POST), 413 (body over the registry's MaxPayload) or 500
// (any other function error; see Func). The request's context is the
// function's. The handler is safe for concurrent use.
func NewHTTPHandler(reg *Registry) http.Handler {
	return newRPCHandler(reg, nil)
}

func newRPCHandler(reg *Registry, m *servedMetrics) *rpcHandler {
	if reg == nil {
		reg = NewRegistry(Limits{})
	}
	return &rpcHandler{reg: reg, maxPayload: reg.Limits().MaxPayload, m: m}
}

type rpcHandler struct {
	reg        *Registry
	maxPayload int
	bufs       httpserve.BodyPool
	m          *servedMetrics // nil: no metrics
}

func (h *rpcHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn, ok := strings.CutPrefix(r.URL.Path, "/rpc/")
	if !ok || strings.Contains(fn, "/") {
		writeError(w, http.StatusNotFound, "not found: use POST /rpc/<fn>")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: use POST")
		return
	}
	if !h.reg.Has(fn) {
		code, msg := status(&unknownFunctionError{fn: fn, known: h.reg.Names()})
		writeError(w, code, msg)
		return
	}
	buf, err := readBody(&h.bufs, w, r, h.maxPayload)
	if err != nil {
		code, msg := status(err)
		writeError(w, code, msg)
		return
	}
	defer buf.Release()
	start := time.Now()
	out, cerr := h.reg.Call(r.Context(), fn, buf.B)
	code, msg := status(cerr)
	h.m.served(fn, viaHTTP, code, time.Since(start))
	if cerr != nil {
		writeError(w, code, msg)
		return
	}
	writeReply(w, fn, out)
}

// readBody reads r's body into a pooled buffer: a body over max is a
// CodeTooLarge *broker.Error, a failed read a CodeBadRequest one.
func readBody(p *httpserve.BodyPool, w http.ResponseWriter, r *http.Request, max int) (*httpserve.Body, error) {
	buf, err := p.Read(w, r, max)
	if err == nil {
		return buf, nil
	}
	if tl, ok := errors.AsType[*httpserve.TooLargeError](err); ok {
		return nil, broker.WrapError(broker.CodeTooLarge, tl)
	}
	return nil, badInput("%v", err)
}

// writeReply writes a function's successful reply.
func writeReply(w http.ResponseWriter, fn string, out []byte) {
	h := w.Header()
	h["Content-Type"] = []string{contentType(fn)}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out) // a failed write means the client went away
}

// writeError writes {"error":msg} with status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	b := appendErrorJSON(make([]byte, 0, len(msg)+16), msg)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// HTTPConfig configures an HTTPServer. The zero value works.
type HTTPConfig struct {
	// Addr is the listen address. If empty, DefaultHTTPAddr
	// (127.0.0.1:8788) is used; port 0 picks a free port (see
	// HTTPServer.Addr).
	Addr string
	// Registry holds the functions served at /rpc/<fn>. If nil,
	// NewRegistry(Limits{}) is used.
	Registry *Registry
	// ReadTimeout bounds reading one request, headers and body. If zero, 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its reply. If zero,
	// 60 s (a compute of 1,000,000 rounds takes well under a second).
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. If zero, 120 s.
	IdleTimeout time.Duration
	// Logger receives lifecycle events and server errors. The zero value
	// discards them.
	Logger zerolog.Logger
	// Metrics, when set, counts the served calls
	// (pipeline_rpc_served_total{via="http"}). Default: none.
	Metrics *metrics.Metrics
	// Handlers are extra routes served next to /rpc/ (e.g. "/metrics",
	// "/healthz", "/readyz"), by ServeMux pattern.
	Handlers map[string]http.Handler
	// AuthToken, when set, is required as a bearer token
	// (Authorization: Bearer <token>) on /rpc/ and every extra handler but
	// /healthz and /readyz; a request without it gets 401 before its body
	// is read. Refusals are logged at most once per 10 s. Empty: no token.
	AuthToken string
}

// HTTPServer serves the runtime's HTTP side (NewHTTPHandler plus
// HTTPConfig.Handlers) on a TCP address. Create it with NewHTTPServer, then
// Start; Shutdown stops it for good. Its methods are safe for concurrent
// use.
type HTTPServer struct {
	srv *httpserve.Server
	cfg HTTPConfig
	log zerolog.Logger

	mu      sync.Mutex
	stopped bool
}

// NewHTTPServer returns a server for the runtime's HTTP side; Start runs it.
func NewHTTPServer(cfg HTTPConfig) *HTTPServer {
	if cfg.Addr == "" {
		cfg.Addr = DefaultHTTPAddr
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	log := cfg.Logger.With().Str("component", "rpc-http").Logger()
	srv := &http.Server{
		Handler:           serverHandler(cfg, log),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          stdlog.New(log, "", 0),
	}
	return &HTTPServer{srv: httpserve.New("runtime http server", cfg.Addr, srv, log), cfg: cfg, log: log}
}

// serverHandler is the HTTPServer's handler: the functions under /rpc/ (and
// their JSON 404 for any other path), plus cfg.Handlers; all but the
// health probes behind cfg.AuthToken.
func serverHandler(cfg HTTPConfig, log zerolog.Logger) http.Handler {
	guard := newTokenGuard(cfg.AuthToken, log)
	h := guard.wrap(newRPCHandler(cfg.Registry, newServedMetrics(cfg.Metrics)))
	if len(cfg.Handlers) == 0 {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	for pattern, extra := range cfg.Handlers {
		if pattern == "/healthz" || pattern == "/readyz" {
			mux.Handle(pattern, extra) // probes carry no data
			continue
		}
		mux.Handle(pattern, guard.wrap(extra))
	}
	return mux
}

// tokenGuard requires a bearer token; refusals are logged at most every
// 10 s (a flood of wrong tokens must not flood the log). Safe for
// concurrent use.
type tokenGuard struct {
	token []byte
	log   zerolog.Logger
	// refusals paces the log lines of refused requests.
	refusals logging.Every
}

func newTokenGuard(token string, log zerolog.Logger) *tokenGuard {
	return &tokenGuard{token: []byte(token), log: log}
}

// wrap returns h behind the token check, or h itself without a token.
func (g *tokenGuard) wrap(h http.Handler) http.Handler {
	if len(g.token) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.ok(r) {
			g.refuse(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="pipeline"`)
			writeError(w, http.StatusUnauthorized, "unauthorized: missing or wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (g *tokenGuard) ok(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if len(h) <= 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(h[7:]), g.token) == 1
}

func (g *tokenGuard) refuse(r *http.Request) {
	if n, ok := g.refusals.Tick(); ok {
		g.log.Warn().Int64("refused", n).Str("remote", r.RemoteAddr).Str("path", r.URL.Path).
			Msg("http request refused: missing or wrong bearer token (logged at most every 10 s; refused counts since the last line)")
	}
}

// Start binds the listen address and serves in the background. It returns
// once the address is bound (Addr tells the actual address), or an error:
// ErrStarted when it runs already, ErrStopped after Shutdown, or the listen
// error (ctx bounds only the start).
func (s *HTTPServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	if err := s.srv.Start(ctx); err != nil {
		if errors.Is(err, httpserve.ErrStarted) {
			return ErrStarted
		}
		return fmt.Errorf("runtime: %w", err)
	}
	s.log.Info().Str("addr", s.srv.Addr()).Msg("runtime http listening")
	return nil
}

// Addr is the bound address (host:port) after Start, or "" before.
func (s *HTTPServer) Addr() string { return s.srv.Addr() }

// URL is the base URL of the bound address ("http://host:port"), or "".
func (s *HTTPServer) URL() string { return s.srv.URL() }

// Shutdown stops accepting connections and waits, at most until ctx is
// done, for requests in flight; what is left then is cut off and ctx's error
// returned. After Shutdown, Start fails with ErrStopped. Before Start it
// only marks the server stopped.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	return nil
}
