package metrics

import (
	"context"
	stdlog "log"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/httpserve"
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
// executor` process). Start, Addr, URL and Shutdown come from
// httpserve.Server; its methods are safe for concurrent use.
type OpsServer struct {
	*httpserve.Server
	log zerolog.Logger
}

// NewOpsServer returns a server for h on addr (host:port; port 0 picks a
// free port). Start runs it.
func NewOpsServer(addr string, h http.Handler, log zerolog.Logger) *OpsServer {
	log = log.With().Str("component", "ops").Logger()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(log, "", 0),
	}
	return &OpsServer{Server: httpserve.New("ops server", addr, srv, log), log: log}
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
	if err := s.Server.Start(ctx); err != nil {
		return err
	}
	s.log.Info().Str("metrics", s.URL()+"/metrics").Msg("ops endpoints listening (/metrics /healthz /readyz)")
	return nil
}
