package stack

import (
	"context"
	"fmt"
	"maps"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/dashboard"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Operational endpoints. Every role of a process records into one
// *metrics.Metrics (one registry). Where they are served:
//   - the origin (when it runs here) serves /metrics and the live dashboard
//     at / and /api/stats next to /ws, /healthz and /readyz;
//   - the runtime's HTTP side serves /metrics, /healthz and /readyz next to
//     /rpc/<fn>;
//   - executors without an origin in the process (`pipeline executor`) get
//     their own listener on executor.ops_listen.

// Metrics is the process's metrics registry holder.
func (s *Stack) Metrics() *metrics.Metrics { return s.metrics }

// OpsAddr is the executors' ops listener address, or "" when none runs.
func (s *Stack) OpsAddr() string {
	if s.ops == nil {
		return ""
	}
	return s.ops.Addr()
}

// withOriginOps adds /metrics and the dashboard to the origin's extra
// routes.
func (s *Stack) withOriginOps(h map[string]http.Handler) (map[string]http.Handler, error) {
	out := maps.Clone(h)
	if out == nil {
		out = make(map[string]http.Handler)
	}
	dcfg := dashboard.Config{
		Gatherer: s.metrics.Gatherer(),
		Title:    "origin " + s.cfg.Origin.ID,
		Started:  s.metrics.Started(),
	}
	if s.cfg.Executor.Count > 0 {
		dcfg.Hosts = executor.MetricsOf(s.metrics).TopHosts
	}
	d, err := dashboard.New(dcfg)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	maps.Copy(out, d.Handlers())
	out["/metrics"] = s.metrics.Handler()
	return out, nil
}

// runtimeOps are the operational routes of the runtime's HTTP side: ready
// while its NATS connection is up.
func (s *Stack) runtimeOps(nc *nats.Conn) (map[string]http.Handler, error) {
	ready, err := metrics.NewReadiness(metrics.ReadinessConfig{Conns: []*nats.Conn{nc}})
	if err != nil {
		return nil, fmt.Errorf("stack: runtime readiness: %w", err)
	}
	return metrics.Handlers(s.metrics, ready), nil
}

// startExecutorOps starts the ops listener of a process that runs
// executors and no origin. A listener that cannot bind (another executor
// on this host has the default port) is logged, not fatal: the executors
// work without it.
func (s *Stack) startExecutorOps(ctx context.Context, js jetstream.JetStream) error {
	addr := s.cfg.Executor.OpsListen
	if len(s.executors) == 0 || s.cfg.Origin.Enabled || addr == "" {
		return nil
	}
	streams := []string{broker.JobsStream, broker.ResultsStream}
	if a := s.cfg.NATS.Auth; a.Enabled && a.Admin.User == "" {
		// js is an executor's connection: its user may read the jobs
		// stream's info but not the results stream's (ExecutorPermissions),
		// and a refused check would keep /readyz at 503 for ever.
		streams = streams[:1]
	}
	ready, err := metrics.NewReadiness(metrics.ReadinessConfig{
		Conns:   append([]*nats.Conn(nil), s.conns...),
		JS:      js,
		Streams: streams,
	})
	if err != nil {
		return fmt.Errorf("stack: executor readiness: %w", err)
	}
	ops := metrics.NewOpsServer(addr, metrics.NewOpsMux(s.metrics, ready), s.log)
	if err := ops.Start(ctx); err != nil {
		s.log.Warn().Err(err).Msg("executor ops endpoints (/metrics /healthz /readyz) not served; set --ops-listen (executor.ops_listen) to a free address")
		return nil
	}
	s.ops = ops
	s.closers = append(s.closers, ops.Shutdown)
	return nil
}
