package stack

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/rpc"
)

func (s *Stack) rpcLimits() rpc.Limits {
	return rpc.Limits{MaxPayload: s.cfg.Runtime.MaxPayload, MaxRounds: s.cfg.Runtime.MaxRounds}
}

// startRuntime starts the runtime micro service (NATS) and its HTTP side when
// enabled.
func (s *Stack) startRuntime(ctx context.Context, subjects broker.Subjects) error {
	if !s.cfg.Runtime.Enabled {
		return nil
	}
	nc, err := s.connect(ctx, "pipeline runtime", broker.RoleRuntime, "")
	if err != nil {
		return err
	}
	svc, err := rpc.NewService(nc, rpc.ServiceConfig{
		SubjectPrefix: subjects.Prefix,
		Limits:        s.rpcLimits(),
		Metrics:       s.metrics,
		Logger:        s.log,
	})
	if err != nil {
		return fmt.Errorf("stack: runtime service: %w", err)
	}
	s.closers = append(s.closers, func(context.Context) error { return svc.Stop() })
	ops, err := s.runtimeOps(nc)
	if err != nil {
		return err
	}
	hs := rpc.NewHTTPServer(rpc.HTTPConfig{Addr: s.cfg.Runtime.Listen, Limits: s.rpcLimits(), Metrics: s.metrics, Handlers: ops, Logger: s.log})
	if err := hs.Start(ctx); err != nil {
		return fmt.Errorf("stack: runtime http: %w", err)
	}
	s.runtimeHTTP = hs.URL()
	s.closers = append(s.closers, hs.Shutdown)
	s.log.Info().Str("http", hs.URL()+"/rpc/<fn>").Str("nats", subjects.RPCGroup()+".<fn>").Msg("runtime service running")
	return nil
}

// originHandlers are the extra routes the origin serves: the /call caller.
func (s *Stack) originHandlers(nc *nats.Conn, subjects broker.Subjects) map[string]http.Handler {
	runtimeURL := s.runtimeHTTP
	if runtimeURL == "" {
		runtimeURL = "http://" + s.cfg.Runtime.Listen
	}
	c := rpc.NewCaller(rpc.CallerConfig{
		NC:            nc,
		RuntimeHTTP:   runtimeURL,
		SubjectPrefix: subjects.Prefix,
		Timeout:       s.cfg.Runtime.Timeout,
		Limits:        s.rpcLimits(),
		Metrics:       s.metrics,
		Logger:        s.log,
	})
	s.closers = append(s.closers, func(context.Context) error { c.Close(); return nil })
	return map[string]http.Handler{"/call/": c}
}

// RuntimeHTTP is the runtime's HTTP base URL when it runs in this process.
func (s *Stack) RuntimeHTTP() string { return s.runtimeHTTP }
