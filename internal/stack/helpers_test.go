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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
