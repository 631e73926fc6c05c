package executor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestExecutorTrimsResults: a started executor runs the results trimmer
// (here with no retention: acknowledged results go at once), a kick from a
// full results stream makes it trim without waiting for its turn, and
// Shutdown stops the loop.
func TestExecutorTrimsResults(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// An origin read and acknowledged one result.
	cons, err := b.js.CreateOrUpdateConsumer(ctx, broker.ResultsStream, broker.OriginConsumerConfig(broker.Subjects{}, testOrigin, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, broker.Subjects{}.ResultOf(testOrigin, "j1"), []byte("done")); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	m := metrics.New()
	nc := testutil.Connect(t, b.srv)
	before := goleak.IgnoreCurrent()
	e, err := New(nc, Config{
		ID:            "trimmer",
		NoDeadLetters: true,
		Results:       broker.StreamsConfig{FinishedTTL: -1},
		Metrics:       m,
		Logger:        zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.kickTrim()
	deadline := time.Now().Add(20 * time.Second) // a busy machine: a bound, not a pace
	for b.streamMsgs(broker.ResultsStream) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("acknowledged result not trimmed after a kick")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if v, _ := testutil.MetricValue(t, m.Gatherer(), MetricResultsTrimmedTotal, nil); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 1 after the trim", MetricResultsTrimmedTotal)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.trim.done:
	default:
		t.Fatal("trim loop still running after Shutdown")
	}
	// No goroutine of the trimmer is left. (Other goroutines of this
	// test's server, connection and consumers may still run: only the
	// trimmer's are this test's business.)
	if err := goleak.Find(before); err != nil && strings.Contains(err.Error(), ".trimLoop(") {
		t.Fatalf("trim loop leaked: %v", err)
	}
	e.kickTrim() // after Shutdown: harmless, never blocks
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
