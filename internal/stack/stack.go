// Package stack wires the pipeline's roles together from a config.Config:
// the embedded NATS server (optional), stream provisioning, an origin,
// executors, the runtime service and the test target. `pipeline up` runs all
// of them in one process; the single-role subcommands run one each; tests and
// `loadgen --embedded` use StartEphemeral.
package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/target"
	"github.com/pipeline-dev/pipeline/origin"
	"github.com/pipeline-dev/pipeline/runtime"
)

// Stack is a set of running roles. Shutdown stops them in the documented
// order.
type Stack struct {
	cfg config.Config
	log zerolog.Logger

	server    *broker.Server
	conns     []*nats.Conn
	origin    *origin.Server
	executors []*executor.Executor
	target    *target.Server
	closers   []func(context.Context) error // runtime pieces, stopped before NATS
	tempDir   string
	conts     []namedCont
	// runtimeHTTP is the in-process runtime's HTTP base URL.
	runtimeHTTP string
	registry    *runtime.Registry // see functions()
	// metrics is shared by every role of the process (see ops.go).
	metrics *metrics.Metrics
	ops     *metrics.OpsServer
}

// Option adjusts how Start builds the roles.
type Option func(*Stack)

// WithContinuation registers a named continuation on the origin before it
// starts consuming results.
func WithContinuation(name string, fn origin.ContinuationFunc) Option {
	return func(s *Stack) { s.conts = append(s.conts, namedCont{name, fn}) }
}

type namedCont struct {
	name string
	fn   origin.ContinuationFunc
}

// Start runs every role cfg enables. On error, whatever started is stopped.
func Start(ctx context.Context, cfg config.Config, log zerolog.Logger, opts ...Option) (*Stack, error) {
	s := &Stack{cfg: cfg, log: log, metrics: metrics.New()}
	for _, o := range opts {
		o(s)
	}
	if err := s.start(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil, err
	}
	return s, nil
}

// StartEphemeral starts NATS (JetStream in a temporary directory), an
// origin, one executor, the runtime service and the test target in-process,
// all on free 127.0.0.1 ports. The destination policy allows the test target
// only. Shutdown removes the temporary directory.
func StartEphemeral(ctx context.Context, log zerolog.Logger) (*Stack, error) {
	return Start(ctx, EphemeralConfig(), log)
}

// EphemeralConfig is the configuration StartEphemeral uses; tests adjust it
// and call Start.
func EphemeralConfig() config.Config {
	c := config.Default()
	c.NATS.Embedded = true
	c.NATS.Port = -1
	c.NATS.MonitorPort = -2
	c.NATS.DataDir = "" // temporary
	c.Origin.Listen = "127.0.0.1:0"
	c.Runtime.Listen = "127.0.0.1:0"
	c.Target.Listen = "127.0.0.1:0"
	c.Executor.Count = 1
	c.Executor.OpsListen = "127.0.0.1:0"
	return c
}

func (s *Stack) start(ctx context.Context) error {
	cfg := &s.cfg
	subjects := broker.Subjects{Prefix: cfg.NATS.SubjectPrefix}
	if err := cfg.Streams.Validate(); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if cfg.Target.Enabled {
		t := target.New(cfg.Target, s.log)
		if err := t.Start(ctx); err != nil {
			return err
		}
		s.target = t
		// The executors may reach the target where it actually listens
		// (its port may have been 0).
		if !contains(cfg.Executor.Policy.Allow, t.Addr()) {
			cfg.Executor.Policy.Allow = append(cfg.Executor.Policy.Allow, t.Addr())
		}
	}
	if cfg.NATS.Embedded {
		dir := cfg.NATS.DataDir
		if dir == "" {
			d, err := os.MkdirTemp("", "pipeline-nats-*")
			if err != nil {
				return fmt.Errorf("stack: temp data dir: %w", err)
			}
			s.tempDir, dir = d, d
		}
		n := cfg.NATS
		n.DataDir = dir
		scfg, err := n.ServerConfig(false) // up runs a single server
		if err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		scfg.Logger = s.log.With().Str("component", "nats").Logger()
		srv, err := broker.NewServer(scfg)
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			return err
		}
		s.server = srv
		ev := s.log.Info().Str("client", srv.ClientURL()).Str("store", dir).Bool("sync_always", cfg.NATS.SyncAlways)
		if m := srv.MonitorAddr(); m != "" {
			ev = ev.Str("monitor", "http://"+m)
		}
		ev.Msg("embedded NATS listening")
	}

	// Provision once; every role may do it, it is idempotent. With per-role
	// users only the admin may manage streams: a role process without admin
	// credentials expects them to exist (a refused request would only time out).
	var js jetstream.JetStream
	if cfg.NATS.Auth.Enabled && cfg.NATS.Auth.Admin.User == "" {
		s.log.Info().Msg("per-role auth without admin credentials: not provisioning streams")
	} else {
		var err error
		if js, err = s.provision(ctx, subjects); err != nil {
			return err
		}
	}
	defer func() { s.metrics.WatchQueue(js, subjects) }() // js may come from an executor below

	for i := 0; i < cfg.Executor.Count; i++ {
		enc, err := s.connect(ctx, fmt.Sprintf("pipeline executor %d", i+1), broker.RoleExecutor, "")
		if err != nil {
			return err
		}
		if js == nil { // executors may read the consumer's backlog
			js, _ = jetstream.New(enc)
		}
		ecfg := cfg.Executor.Config
		if ecfg.ID != "" && cfg.Executor.Count > 1 {
			ecfg.ID = fmt.Sprintf("%s-%d", ecfg.ID, i+1)
		}
		ecfg.Subjects, ecfg.Metrics, ecfg.Logger = subjects, s.metrics, s.log
		// Executors trim the results stream to the streams section's
		// result retention and sizes.
		ecfg.Results = cfg.Streams
		ex, err := executor.New(enc, ecfg)
		if err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		if err := ex.Start(ctx); err != nil {
			return err
		}
		s.executors = append(s.executors, ex)
	}

	if err := s.startExecutorOps(ctx, js); err != nil {
		return err
	}

	if err := s.startRuntime(ctx, subjects); err != nil {
		return err
	}

	if cfg.Origin.Enabled {
		onc, err := s.connect(ctx, "pipeline origin "+cfg.Origin.ID, broker.RoleOrigin, cfg.Origin.ID)
		if err != nil {
			return err
		}
		handlers, err := s.withOriginOps(nil)
		if err != nil {
			return err
		}
		ocfg := cfg.Origin.Config
		ocfg.Subjects, ocfg.Replicas, ocfg.ResultAckWait = subjects, cfg.Streams.Replicas, cfg.Streams.AckWait
		ocfg.KeyWindow, ocfg.ResultRetention = cfg.Streams.KeyWindow, cfg.Streams.FinishedTTL
		ocfg.Handlers, ocfg.Call, ocfg.Metrics, ocfg.Logger = handlers, s.callConfig(), s.metrics, s.log
		if cfg.NATS.Auth.Enabled {
			// Alone in its own NATS account: its own delayed-jobs stream.
			own := cfg.Streams
			own.Subjects = subjects
			ocfg.OwnAccount = &own
		}
		o, err := origin.New(onc, ocfg)
		if err != nil {
			return err
		}
		for _, c := range s.conts {
			if err := o.Register(c.name, c.fn); err != nil {
				return err
			}
		}
		s.origin = o
		if err := o.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// provision creates or updates the streams and consumers as the admin user.
func (s *Stack) provision(ctx context.Context, subjects broker.Subjects) (jetstream.JetStream, error) {
	cfg := &s.cfg
	nc, err := s.connect(ctx, "pipeline provisioner", broker.RoleAdmin, "")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("stack: jetstream: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sc := cfg.Streams
	sc.Subjects = subjects
	// With auth on each origin is in its own account: its results consumer
	// is made here, in the pipeline account.
	sc.Tenants = cfg.NATS.Auth.OriginIDs()
	err = broker.Provision(pctx, js, sc)
	cancel()
	if err != nil {
		return nil, err
	}
	return js, nil
}

// connect opens a NATS connection for one role: in-process when the server
// is embedded here, else to cfg.NATS.URL.
func (s *Stack) connect(ctx context.Context, name string, role broker.Role, originID string) (*nats.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc, err := s.cfg.NATS.ConnConfig(name, role, originID)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	cc.InProcess = s.server
	cc.Logger = s.log.With().Str("conn", name).Logger()
	nc, err := broker.Connect(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("stack: %s: %w", name, err)
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

// Origin is the in-process origin, or nil.
func (s *Stack) Origin() *origin.Server { return s.origin }

// Executors are the in-process executors.
func (s *Stack) Executors() []*executor.Executor { return s.executors }

// Server is the embedded NATS server, or nil.
func (s *Stack) Server() *broker.Server { return s.server }

// OriginWS is the origin's WebSocket URL, e.g. ws://127.0.0.1:8080/ws.
func (s *Stack) OriginWS() string {
	if s.origin == nil {
		return ""
	}
	return "ws://" + s.origin.Addr() + "/ws"
}

// OriginHTTP is the origin's base HTTP URL (the /call caller lives there).
func (s *Stack) OriginHTTP() string {
	if s.origin == nil {
		return ""
	}
	return "http://" + s.origin.Addr()
}

// TargetURL is the test target's base URL, or "".
func (s *Stack) TargetURL() string {
	if s.target == nil {
		return ""
	}
	return s.target.URL()
}

// NATSURL is the URL other processes use to reach NATS.
func (s *Stack) NATSURL() string {
	if s.server != nil {
		return s.server.ClientURL()
	}
	return s.cfg.NATS.URL
}

// Shutdown stops the roles in order: the origin stops accepting and waits
// for in-flight fetches (until ctx ends), executors stop pulling and finish
// their fetches, the runtime stops, connections drain, and the embedded
// server shuts down. It returns the first error.
func (s *Stack) Shutdown(ctx context.Context) error {
	var errs []error
	if s.origin != nil {
		errs = append(errs, s.origin.Shutdown(ctx))
	}
	for _, ex := range s.executors {
		errs = append(errs, ex.Shutdown(ctx))
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i](ctx))
	}
	if s.target != nil {
		errs = append(errs, s.target.Shutdown(ctx))
	}
	for _, nc := range s.conns {
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("drain nats connection: %w", err))
		}
	}
	for _, nc := range s.conns {
		for !nc.IsClosed() {
			select {
			case <-ctx.Done():
				nc.Close()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	if s.server != nil {
		errs = append(errs, s.server.Shutdown(ctx))
	}
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
	s.log.Info().Msg("pipeline stopped")
	return errors.Join(errs...)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}
