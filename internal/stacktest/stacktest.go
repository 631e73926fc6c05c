// Package stacktest starts a whole ephemeral pipeline (embedded NATS,
// origin, executor, runtime, test target on free 127.0.0.1 ports) for the
// tests of other packages, and stops it when the test ends. The tests of
// package stack itself have their own starter (they cannot import this
// package, which imports theirs).
package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/stack"
)

// Start starts stack.EphemeralConfig adjusted by mod (if non-nil), logging
// to log, and shuts it down at test end (a shutdown error fails the test).
// A start failure fails the test at once. With -short it skips the test:
// a whole pipeline is not a short test.
func Start(t testing.TB, mod func(*config.Config), log zerolog.Logger, opts ...stack.Option) *stack.Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the whole pipeline; skipped with -short")
	}
	cfg := stack.EphemeralConfig()
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, cfg, log, opts...)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("stack shutdown: %v", err)
		}
	})
	return st
}
