package metrics

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Handlers returns the operational routes of a role, for mounting on a
// server the role already has: "/metrics" (m's registry), "/healthz" and
// "/readyz" (ready; nil means always ready).
func Handlers(m *Metrics, ready *Readiness) map[string]http.Handler {
	return map[string]http.Handler{
		"/metrics": m.Handler(),
		"/healthz": http.HandlerFunc(Healthz),
		"/readyz":  ready,
	}
}

// OpsServer serves the operational routes (see Handlers) on their own
// listener, for roles without an HTTP server of their own (a `pipeline
// executor` process). Its methods are safe for concurrent use.
type OpsServer struct {
	addr string
	log  zerolog.Logger
	srv  *http.Server

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

// NewOpsServer returns a server for h on addr (host:port; port 0 picks a
// free port). Start runs it.
func NewOpsServer(addr string, h http.Handler, log zerolog.Logger) *OpsServer {
	log = log.With().Str("component", "ops").Logger()
	return &OpsServer{
		addr: addr,
		log:  log,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          stdlog.New(log, "", 0),
		},
		done: make(chan struct{}),
	}
}

// NewOpsMux returns a mux serving Handlers(m, ready).
func NewOpsMux(m *Metrics, ready *Readiness) *http.ServeMux {
	mux := http.NewServeMux()
	for pattern, h := range Handlers(m, ready) {
		mux.Handle(pattern, h)
	}
	return mux
}

// Start binds the address and serves in the background; it returns once
// bound, or the listen error.
func (s *OpsServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return errors.New("ops server: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("ops server: listen on %s: %w", s.addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("ops http server stopped")
		}
	}()
	s.log.Info().Str("metrics", "http://"+ln.Addr().String()+"/metrics").Msg("ops endpoints listening (/metrics /healthz /readyz)")
	return nil
}

// Addr is the bound address after Start, or "".
func (s *OpsServer) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops the server, waiting until ctx ends for requests in
// flight. It is a no-op before Start.
func (s *OpsServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	started := s.ln != nil
	s.mu.Unlock()
	if !started {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	if err != nil {
		return fmt.Errorf("ops server shutdown: %w", err)
	}
	return nil
}
