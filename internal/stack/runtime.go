package stack

import (
	"context"
	"fmt"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/origin"
	"github.com/pipeline-dev/pipeline/runtime"
)

// functions is the process's function registry: the runtime serves it and
// the origin's /call?via=direct runs it inline. Made on first use.
func (s *Stack) functions() *runtime.Registry {
	if s.registry == nil {
		s.registry = runtime.NewRegistry(runtime.Limits{MaxPayload: s.cfg.Runtime.MaxPayload, MaxRounds: s.cfg.Runtime.MaxRounds})
	}
	return s.registry
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
	svc, err := runtime.New(nc, runtime.Config{
		Registry: s.functions(),
		Subjects: subjects,
		Metrics:  s.metrics,
		Logger:   s.log,
	})
	if err != nil {
		return fmt.Errorf("stack: runtime service: %w", err)
	}
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("stack: runtime service: %w", err)
	}
	s.closers = append(s.closers, svc.Shutdown)
	ops, err := s.runtimeOps(nc)
	if err != nil {
		return err
	}
	hs := runtime.NewHTTPServer(runtime.HTTPConfig{Addr: s.cfg.Runtime.Listen, Registry: s.functions(), Metrics: s.metrics, Handlers: ops, Logger: s.log, AuthToken: s.cfg.Runtime.AuthToken})
	if err := hs.Start(ctx); err != nil {
		return fmt.Errorf("stack: runtime http: %w", err)
	}
	s.runtimeHTTP = hs.URL()
	s.closers = append(s.closers, hs.Shutdown)
	s.log.Info().Str("http", hs.URL()+"/rpc/<fn>").Str("nats", subjects.RPC("<fn>")).Msg("runtime service running")
	return nil
}

// callConfig configures the origin's /call caller: via=direct runs the
// process's registry, via=http goes to the runtime's HTTP side (in this
// process, or at runtime.listen).
func (s *Stack) callConfig() origin.CallConfig {
	runtimeURL := s.runtimeHTTP
	if runtimeURL == "" {
		runtimeURL = "http://" + s.cfg.Runtime.Listen
	}
	return origin.CallConfig{
		Functions:    s.functions(),
		RuntimeHTTP:  runtimeURL,
		RuntimeToken: s.cfg.Runtime.AuthToken,
		Timeout:      s.cfg.Runtime.Timeout,
		MaxPayload:   s.functions().Limits().MaxPayload,
	}
}

// RuntimeHTTP is the runtime's HTTP base URL when it runs in this process.
func (s *Stack) RuntimeHTTP() string { return s.runtimeHTTP }
