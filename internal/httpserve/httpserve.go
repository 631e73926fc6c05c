// Package httpserve runs an http.Server on its own listener with the
// lifecycle every HTTP role of the pipeline shares: Start binds and serves in
// the background, Addr/URL tell where (port 0 picks a free one), Shutdown
// drains. The runtime's HTTP side, the executor's ops endpoints and the test
// target use it.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/rs/zerolog"
)

// ErrStarted is returned by Start when the server runs already.
var ErrStarted = errors.New("httpserve: server already started")

// Server is an http.Server with a listener of its own. Its methods are safe
// for concurrent use.
type Server struct {
	name string
	addr string
	srv  *http.Server
	log  zerolog.Logger

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{} // closed when Serve has returned
}

// New returns a server named name (for errors and logs) that will serve srv
// on addr (host:port) once started.
func New(name, addr string, srv *http.Server, log zerolog.Logger) *Server {
	return &Server{name: name, addr: addr, srv: srv, log: log, done: make(chan struct{})}
}

// Start binds the address and serves in the background. It returns once the
// address is bound, or the listen error (ctx bounds only the start).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", s.name, s.addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg(s.name + " stopped")
		}
	}()
	return nil
}

// Addr is the bound address (host:port) after Start, or "" before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL of the bound address ("http://host:port"), or "".
func (s *Server) URL() string {
	if a := s.Addr(); a != "" {
		return "http://" + a
	}
	return ""
}

// Shutdown stops accepting connections and waits, at most until ctx is done,
// for requests in flight (see http.Server.Shutdown); what is left then is
// cut off and ctx's error returned. It is a no-op before Start.
func (s *Server) Shutdown(ctx context.Context) error {
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
		return fmt.Errorf("%s: shut down: %w", s.name, err)
	}
	return nil
}
