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
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
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
	c.Executor.Policy.Allow = nil // the target's address is added when it starts
	return c
}

func (s *Stack) start(ctx context.Context) error {
	cfg := &s.cfg
	subjects := broker.Subjects{Prefix: cfg.NATS.SubjectPrefix}
	switch cfg.Streams.Storage {
	case "", "file", "memory":
	default:
		return fmt.Errorf("stack: streams.storage %q: want file or memory", cfg.Streams.Storage)
	}
	if cfg.Target.Enabled {
		t, err := target.Start(cfg.Target.Listen, s.log)
		if err != nil {
			return err
		}
		s.target = t
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
		users, err := cfg.NATS.Auth.ServerUsers(subjects)
		if err != nil {
			return fmt.Errorf("stack: nats users: %w", err)
		}
		srv, err := broker.StartServer(broker.ServerConfig{
			Users:       users,
			TLS:         s.tlsFiles(),
			Host:        cfg.NATS.Host,
			Port:        cfg.NATS.Port,
			MonitorPort: cfg.NATS.MonitorPort,
			StoreDir:    dir,
			SyncAlways:  cfg.NATS.SyncAlways,
			Logger:      s.log.With().Str("component", "nats").Logger(),
		})
		if err != nil {
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
	defer func() { s.metrics.WatchQueue(js) }() // js may come from an executor below

	if cfg.Executor.Count > 0 {
		pol, err := netpolicy.New(netpolicy.Config{
			Allow:        cfg.Executor.Policy.Allow,
			Deny:         cfg.Executor.Policy.Deny,
			AllowPorts:   cfg.Executor.Policy.AllowPorts,
			DenyPorts:    cfg.Executor.Policy.DenyPorts,
			MaxRedirects: cfg.Executor.Policy.MaxRedirects,
			AllowPrivate: cfg.Executor.Policy.AllowPrivate,
		})
		if err != nil {
			return fmt.Errorf("stack: destination policy: %w", err)
		}
		for i := 0; i < cfg.Executor.Count; i++ {
			enc, err := s.connect(ctx, fmt.Sprintf("pipeline executor %d", i+1), broker.RoleExecutor, "")
			if err != nil {
				return err
			}
			if js == nil { // executors may read the consumer's backlog
				js, _ = jetstream.New(enc)
			}
			id := cfg.Executor.ID
			if id != "" && cfg.Executor.Count > 1 {
				id = fmt.Sprintf("%s-%d", id, i+1)
			}
			ex, err := executor.New(enc, executor.Config{
				ID:          id,
				Subjects:    subjects,
				Concurrency: cfg.Executor.Concurrency,
				Fetcher: executor.FetcherConfig{
					MaxBodyBytes:           cfg.Executor.MaxBodyBytes,
					DefaultTimeout:         cfg.Executor.DefaultTimeout,
					MaxTimeout:             cfg.Executor.MaxTimeout,
					MaxResponseHeaderBytes: cfg.Executor.MaxResponseHeaderBytes,
					MaxIdleConnsPerHost:    cfg.Executor.MaxIdleConnsPerHost,
					Policy:                 pol,
				},
				Retry: executor.RetryPolicy{
					Attempts:  cfg.Executor.Retry.Attempts,
					BaseDelay: cfg.Executor.Retry.BaseDelay,
					MaxDelay:  cfg.Executor.Retry.MaxDelay,
				},
				Metrics: s.metrics,
				Logger:  s.log,
			})
			if err != nil {
				return err
			}
			if err := ex.Start(ctx); err != nil {
				return err
			}
			s.executors = append(s.executors, ex)
		}
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
		o, err := origin.New(onc, origin.Config{
			ID:             cfg.Origin.ID,
			Listen:         cfg.Origin.Listen,
			Subjects:       subjects,
			MaxFrameBytes:  cfg.Origin.MaxFrameBytes,
			HardFrameBytes: cfg.Origin.HardFrameBytes,
			MaxBodyBytes:   cfg.Origin.MaxBodyBytes,
			MaxTimeoutMS:   cfg.Origin.MaxTimeoutMS,
			MaxInFlight:    cfg.Origin.MaxInFlight,
			RatePerConn:    cfg.Origin.RatePerConn,
			RateBurst:      cfg.Origin.RateBurst,
			SendQueue:      cfg.Origin.SendQueue,
			WriteTimeout:   cfg.Origin.WriteTimeout,
			PublishTimeout: cfg.Origin.PublishTimeout,
			DedupWindow:    cfg.Origin.DedupWindow,
			Replicas:       cfg.Streams.Replicas,
			ResultAckWait:  cfg.Streams.AckWait,
			AuthToken:      cfg.Origin.AuthToken,
			AllowedOrigins: cfg.Origin.AllowedOrigins,
			Handlers:       handlers,
			Call:           s.callConfig(),
			Metrics:        s.metrics,
			Logger:         s.log,
		})
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
	err = broker.Provision(pctx, js, broker.StreamsConfig{
		Subjects:         subjects,
		Replicas:         cfg.Streams.Replicas,
		Memory:           cfg.Streams.Storage == "memory",
		MaxJobs:          cfg.Streams.MaxJobs,
		MaxJobBytes:      cfg.Streams.MaxJobBytes,
		MaxResultBytes:   cfg.Streams.MaxResultBytes,
		DuplicateWindow:  cfg.Streams.DuplicateWindow,
		AckWait:          cfg.Streams.AckWait,
		MaxDeliver:       cfg.Streams.MaxDeliver,
		MaxAckPending:    cfg.Streams.MaxAckPending,
		DeadLetterMaxAge: cfg.Streams.DeadLetterAge,
		FinishedTTL:      cfg.Streams.ResultRetention,
		FinishedMaxBytes: cfg.Streams.RetentionBytes,
	})
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
	cc := broker.ConnConfig{
		URLs:      s.cfg.NATS.URL,
		InProcess: s.server,
		Name:      name,
		User:      s.cfg.NATS.User,
		Password:  s.cfg.NATS.Password,
		Token:     s.cfg.NATS.Token,
		TLS:       s.tlsFiles(),
		Logger:    s.log.With().Str("conn", name).Logger(),
	}
	// With per-role users on, each role connects as its own user with its
	// own inbox prefix.
	if err := s.cfg.NATS.Auth.Apply(&cc, role, originID); err != nil {
		return nil, fmt.Errorf("stack: %s: %w", name, err)
	}
	nc, err := broker.Connect(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("stack: %s: %w", name, err)
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

// tlsFiles is the TLS setting for TCP connections, or nil when unset.
func (s *Stack) tlsFiles() *broker.TLSFiles {
	t := s.cfg.NATS.TLS
	if t.CAFile == "" && t.CertFile == "" {
		return nil
	}
	return &t
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
		s.server.Shutdown()
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
