package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/logging"
)

// monitor serves nats-server's monitoring endpoints behind a bearer token
// (ServerConfig.MonitorToken): nats-server has no authentication for its
// monitor, so its handlers are mounted here. /healthz stays open (it tells
// only ok or not). Safe for concurrent use; stop is idempotent and a nil
// monitor does nothing.
type monitor struct {
	listen string
	srv    *http.Server
	log    zerolog.Logger

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}

	// refusals paces the log lines of refused requests.
	refusals logging.Every
}

func newMonitor(ns *server.Server, listen, token string, log zerolog.Logger) *monitor {
	m := &monitor{listen: listen, log: log.With().Str("component", "nats-monitor").Logger()}
	want := []byte(token)
	guard := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a := r.Header.Get("Authorization")
			if len(a) <= 7 || !strings.EqualFold(a[:7], "Bearer ") || subtle.ConstantTimeCompare([]byte(a[7:]), want) != 1 {
				m.refuse(r)
				w.Header().Set("WWW-Authenticate", `Bearer realm="nats-monitor"`)
				http.Error(w, "unauthorized: missing or wrong bearer token", http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux := http.NewServeMux()
	for path, h := range map[string]http.HandlerFunc{
		server.RootPath: ns.HandleRoot, server.VarzPath: ns.HandleVarz, server.ConnzPath: ns.HandleConnz,
		server.RoutezPath: ns.HandleRoutez, server.GatewayzPath: ns.HandleGatewayz, server.LeafzPath: ns.HandleLeafz,
		server.SubszPath: ns.HandleSubsz, server.StackszPath: ns.HandleStacksz, server.AccountzPath: ns.HandleAccountz,
		server.AccountStatzPath: ns.HandleAccountStatz, server.JszPath: ns.HandleJsz, server.RaftzPath: ns.HandleRaftz,
	} {
		mux.HandleFunc(path, guard(h))
	}
	mux.HandleFunc(server.HealthzPath, ns.HandleHealthz)
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(m.log, "", 0),
	}
	return m
}

// start binds the listen address and serves in the background.
func (m *monitor) start() error {
	ln, err := net.Listen("tcp", m.listen)
	if err != nil {
		return fmt.Errorf("monitor listen %s: %w", m.listen, err)
	}
	m.mu.Lock()
	m.ln, m.done = ln, make(chan struct{})
	m.mu.Unlock()
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error().Err(err).Msg("nats monitor stopped")
		}
	}()
	return nil
}

// addr is the bound address, or "" before start.
func (m *monitor) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// stop closes the listener and open connections and waits for the serve
// goroutine (monitoring requests are short; none is worth waiting for).
func (m *monitor) stop() {
	if m == nil {
		return
	}
	m.mu.Lock()
	done := m.done
	m.done = nil
	m.mu.Unlock()
	if done == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	<-done
}

// refuse logs a refused request at most once per 10 s, with a count.
func (m *monitor) refuse(r *http.Request) {
	if n, ok := m.refusals.Tick(); ok {
		m.log.Warn().Int64("refused", n).Str("remote", r.RemoteAddr).Str("path", r.URL.Path).
			Msg("nats monitor request refused: missing or wrong bearer token (logged at most every 10 s)")
	}
}
