package executor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// delayHost answers after ?ms= milliseconds.
func delayHost(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}

// done counts the jobs among ids with a result.
func (h *harness) done(ids []string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, id := range ids {
		if len(h.results[id]) > 0 {
			n++
		}
	}
	return n
}

// A deep backlog of one origin does not starve a second origin: the second
// origin's jobs finish while most of the first one's backlog still waits.
func TestDeepBacklogDoesNotStarveOtherOrigin(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	target := delayHost(t)
	const backlog = 1000
	var o1 []string
	for i := range backlog {
		id := fmt.Sprintf("o1-%d", i)
		o1 = append(o1, id)
		h.enqueue("o1", id, target.URL+"/?ms=20", 5*time.Second)
	}
	m := metrics.New()
	// No host cap: this is about the share between origins.
	h.executor(Config{Concurrency: 8, Metrics: m, DiscoverInterval: 100 * time.Millisecond})
	// o1 is being served.
	deadline := time.Now().Add(20 * time.Second)
	for h.done(o1) < 16 {
		if time.Now().After(deadline) {
			t.Fatalf("o1's backlog is not being served: %d of %d done", h.done(o1), backlog)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// o2 starts (creating its jobs consumer, as an origin does) and sends 20.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.EnsureJobsConsumer(ctx, h.js, broker.Subjects{}, "o2"); err != nil {
		t.Fatal(err)
	}
	var o2 []string
	for i := range 20 {
		id := fmt.Sprintf("o2-%d", i)
		o2 = append(o2, id)
		h.enqueue("o2", id, target.URL+"/?ms=20", 5*time.Second)
	}
	if !h.waitResults(o2, 30*time.Second) {
		t.Fatalf("o2 got %d of 20 results", h.done(o2))
	}
	// With turns o2 needs about as long as 40 jobs on 8 slots; behind o1's
	// line it would wait for all 1000. Loose: half of o1's backlog left.
	if d := h.done(o1); d > backlog/2 {
		t.Errorf("o2 finished after %d of o1's %d jobs; with a fair share it finishes long before half", d, backlog)
	}
	if v, ok := testutil.MetricValue(t, m.Gatherer(), MetricOriginBacklog, map[string]string{LabelOrigin: "o1"}); !ok || v < 1 {
		t.Errorf("%s{origin=o1} = %v (%v), want o1's backlog", MetricOriginBacklog, v, ok)
	}
	if !h.waitResults(o1, 60*time.Second) {
		t.Fatalf("o1 got %d of %d results", h.done(o1), backlog)
	}
	for _, id := range append(o1, o2...) {
		if rs, _ := h.result(id); len(rs) != 1 {
			t.Fatalf("job %s: %d results, want exactly 1", id, len(rs))
		}
	}
}

// An origin that goes away leaves no consumer behind, and jobs stored for it
// later are still found and fetched.
func TestIdleOriginConsumerGoesAway(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{JobsConsumerIdle: time.Second})
	target := fastHost(t)
	h.executor(Config{Concurrency: 4, DiscoverInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.enqueue("gone", "gone-1", target.URL+"/", 5*time.Second)
	if !h.waitResults([]string{"gone-1"}, 10*time.Second) {
		t.Fatal("job of a new origin without a consumer was not fetched")
	}
	if _, err := h.js.Consumer(ctx, broker.JobsStream, broker.JobsConsumer("gone")); err != nil {
		t.Fatalf("the executor made no jobs consumer for the origin: %v", err)
	}
	// Idle for 1 s, the executor stops pulling; 1 s later the server
	// deletes the consumer (it checks inactivity every few seconds).
	for {
		_, err := h.js.Consumer(ctx, broker.JobsStream, broker.JobsConsumer("gone"))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the jobs consumer of an idle origin is still there: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.enqueue("gone", "gone-2", target.URL+"/", 5*time.Second)
	if !h.waitResults([]string{"gone-2"}, 10*time.Second) {
		t.Fatal("job of an origin whose consumer was deleted was not fetched")
	}
}

// A store provisioned by an older version (one shared executors consumer)
// is migrated by Provision: the consumer goes, its jobs are fetched.
func TestProvisionDropsLegacyConsumer(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Make it look old: no per-origin consumers, an unfiltered one.
	if _, err := h.js.CreateOrUpdateConsumer(ctx, broker.JobsStream, jetstream.ConsumerConfig{
		Durable: "executors", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	target := fastHost(t)
	h.enqueue("o1", "old-1", target.URL+"/", 5*time.Second)
	if err := broker.Provision(ctx, h.js, broker.StreamsConfig{Storage: broker.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Consumer(ctx, broker.JobsStream, "executors"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("legacy consumer still there after Provision (err %v)", err)
	}
	h.executor(Config{Concurrency: 4, DiscoverInterval: 100 * time.Millisecond})
	if !h.waitResults([]string{"old-1"}, 10*time.Second) {
		t.Fatal("job stored before the upgrade was not fetched")
	}
}

// Shutdown may be called twice; Start after Shutdown fails with ErrStopped.
func TestShutdownTwice(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	e := h.executor(Config{Concurrency: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("first Shutdown: %v", err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := e.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Shutdown = %v, want ErrStopped", err)
	}
}
