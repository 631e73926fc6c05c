package stack

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
)

// startStack starts an ephemeral pipeline adjusted by mod and stops it at
// test end.
func startStack(t *testing.T, mod func(*config.Config), opts ...Option) *Stack {
	t.Helper()
	cfg := EphemeralConfig()
	if mod != nil {
		mod(&cfg)
	}
	return startConfigured(t, cfg, zerolog.WarnLevel, opts...)
}

// startConfigured starts the roles cfg enables, logging to the test at
// level, and stops them at test end. It is the one stack starter of this
// package's tests (other packages' tests cannot share it: testutil must not
// import stack, whose tests use testutil).
func startConfigured(t *testing.T, cfg config.Config, level zerolog.Level, opts ...Option) *Stack {
	t.Helper()
	return startConfiguredTo(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(level), opts...)
}

// startConfiguredTo is startConfigured with its own logger.
func startConfiguredTo(t *testing.T, cfg config.Config, log zerolog.Logger, opts ...Option) *Stack {
	t.Helper()
	// A bound, not a wait: Start returns once every role is ready. An R3
	// cluster under -race with CPU burners beside it has taken over 30 s
	// to create every stream and consumer.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := Start(ctx, cfg, log, opts...)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return st
}

// startServer creates and starts an embedded NATS server.
func startServer(cfg broker.ServerConfig) (*broker.Server, error) {
	srv, err := broker.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(context.Background()); err != nil {
		return nil, err
	}
	return srv, nil
}

// restartable starts stacks on one data directory, so that a test can stop
// the whole pipeline and start it again on the same streams. mod adjusts
// each start's configuration (may be nil); stop waits up to 5 s.
type restartable struct {
	t   *testing.T
	dir string
	log zerolog.Logger
	mod func(*config.Config)
}

func newRestartable(t *testing.T, mod func(*config.Config)) *restartable {
	return &restartable{t: t, dir: t.TempDir(), log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), mod: mod}
}

// start starts a stack on the data directory with executors executors
// (negative: the configuration's default).
func (r *restartable) start(executors int) *Stack {
	r.t.Helper()
	cfg := EphemeralConfig()
	cfg.NATS.DataDir = r.dir
	if executors >= 0 {
		cfg.Executor.Count = executors
	}
	if r.mod != nil {
		r.mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Start(ctx, cfg, r.log)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

func (r *restartable) stop(st *Stack) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = st.Shutdown(ctx)
}
