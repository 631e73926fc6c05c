package rpc

import (
	"context"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/httpserve"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// DefaultHTTPAddr is where the runtime's HTTP side listens by default.
const DefaultHTTPAddr = "127.0.0.1:8788"

// NewHTTPHandler returns the runtime's HTTP side: POST /rpc/<fn> runs fn on
// the request body and replies 200 with the function's reply body. Errors are
// JSON {"error":"..."} with status 400 (bad input), 404 (unknown function or
// path), 405 (not POST) or 413 (body over limits.MaxPayload). The handler is
// safe for concurrent use.
func NewHTTPHandler(limits Limits) http.Handler {
	return &rpcHandler{limits: limits.withDefaults()}
}

type rpcHandler struct {
	limits Limits
	bufs   bodyPool
	m      *metrics.RPC // nil: no metrics
}

func (h *rpcHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn, ok := strings.CutPrefix(r.URL.Path, "/rpc/")
	if !ok || strings.Contains(fn, "/") {
		writeError(w, errorf(http.StatusNotFound, "not found: use POST /rpc/<fn>"))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, errorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method))
		return
	}
	if !knownFunction(fn) {
		writeError(w, unknownFunction(fn))
		return
	}
	buf, err := h.bufs.read(w, r, h.limits.MaxPayload)
	if err != nil {
		writeError(w, err)
		return
	}
	defer buf.release()
	start := time.Now()
	out, cerr := h.limits.Call(fn, buf.b)
	h.m.Served(fn, ViaHTTP, statusOf(cerr), time.Since(start))
	if cerr != nil {
		writeError(w, AsError(cerr))
		return
	}
	writeReply(w, fn, out)
}

// bodyPool recycles request body buffers of up to maxPooledBody bytes. The
// zero value is ready to use.
type bodyPool struct{ p sync.Pool }

// body is a pooled request body buffer.
type body struct {
	b    []byte
	pool *bodyPool
}

const maxPooledBody = 256 << 10

func (p *bodyPool) get() *body {
	if b, ok := p.p.Get().(*body); ok {
		return b
	}
	return &body{b: make([]byte, 0, 4096), pool: p}
}

// release returns the buffer to its pool; its bytes must not be used after.
func (b *body) release() {
	if cap(b.b) <= maxPooledBody {
		b.b = b.b[:0]
		b.pool.p.Put(b)
	}
}

// read reads r's body, at most max bytes, into a pooled buffer. A body over
// max fails with a 413 *Error, a failed read with a 400 *Error. The caller
// releases the buffer once nothing refers to its bytes any longer.
func (p *bodyPool) read(w http.ResponseWriter, r *http.Request, max int) (*body, *Error) {
	if r.ContentLength > int64(max) {
		return nil, tooLarge(int(r.ContentLength), max)
	}
	buf := p.get()
	if r.ContentLength > 0 && int(r.ContentLength) > cap(buf.b) {
		buf.b = make([]byte, 0, r.ContentLength)
	}
	rd := http.MaxBytesReader(w, r.Body, int64(max))
	for {
		if len(buf.b) == cap(buf.b) {
			buf.b = append(buf.b, 0)[:len(buf.b)]
		}
		n, err := rd.Read(buf.b[len(buf.b):cap(buf.b)])
		buf.b = buf.b[:len(buf.b)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			buf.release()
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, errorf(http.StatusRequestEntityTooLarge, "payload is over the %d-byte limit", max)
			}
			return nil, badInput("cannot read request body: %v", err)
		}
	}
}

// writeReply writes a function's successful reply.
func writeReply(w http.ResponseWriter, fn string, out []byte) {
	h := w.Header()
	h["Content-Type"] = []string{ContentType(fn)}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out) // a failed write means the client went away
}

// writeError writes e as {"error":"..."} with status e.Code.
func writeError(w http.ResponseWriter, e *Error) {
	b := appendErrorJSON(make([]byte, 0, len(e.Message)+16), e.Message)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(e.Code)
	_, _ = w.Write(b)
}

// HTTPConfig configures an HTTPServer. The zero value works.
type HTTPConfig struct {
	// Addr is the listen address. If empty, DefaultHTTPAddr
	// (127.0.0.1:8788) is used; port 0 picks a free port (see
	// HTTPServer.Addr).
	Addr string
	// Limits bound the accepted requests; the zero value uses DefaultLimits.
	Limits Limits
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
}

// ErrServerStarted is returned by HTTPServer.Start when called twice.
var ErrServerStarted = httpserve.ErrStarted

// HTTPServer serves NewHTTPHandler on a TCP address: Start, Addr, URL and
// Shutdown come from httpserve.Server. Its methods are safe for concurrent
// use.
type HTTPServer struct {
	*httpserve.Server
	cfg HTTPConfig
	log zerolog.Logger
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
		Handler:           serverHandler(cfg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          stdlog.New(log, "", 0),
	}
	return &HTTPServer{Server: httpserve.New("runtime http server", cfg.Addr, srv, log), cfg: cfg, log: log}
}

// Start binds the listen address and serves in the background. It returns
// once the address is bound (use Addr for the actual address), or an error if
// binding fails or ctx is done first.
func (s *HTTPServer) Start(ctx context.Context) error {
	if err := s.Server.Start(ctx); err != nil {
		return err
	}
	s.log.Info().Str("addr", s.Addr()).Msg("runtime http listening")
	return nil
}
