package executor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// These tests run executors against a real embedded NATS server with
// JetStream and real HTTP targets on 127.0.0.1.

const testOrigin = "o1"

// bench is one embedded server with the pipeline's streams provisioned.
type bench struct {
	t   *testing.T
	srv *broker.Server
	js  jetstream.JetStream
}

func newBench(t *testing.T, streams broker.StreamsConfig) *bench {
	t.Helper()
	srv := testutil.StartNATS(t)
	js := testutil.JetStream(t, srv)
	testutil.Provision(t, js, streams)
	return &bench{t: t, srv: srv, js: js}
}

// target is an HTTP destination that counts requests and answers each with
// what answer returns (called with the 1-based request number).
type target struct {
	*httptest.Server
	hits atomic.Int64
}

func newTarget(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int64)) *target {
	t.Helper()
	tg := &target{}
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, tg.hits.Add(1))
	}))
	t.Cleanup(tg.Close)
	return tg
}

// executor starts an executor with its own connection that may fetch only
// from tg, and shuts it down at test end unless the test did.
func (b *bench) executor(id string, tg *target) *Executor {
	b.t.Helper()
	pol, err := netpolicy.New(netpolicy.Config{Allow: []string{tg.Listener.Addr().String()}})
	if err != nil {
		b.t.Fatal(err)
	}
	e, err := New(testutil.Connect(b.t, b.srv), Config{
		ID:            id,
		Concurrency:   4,
		Fetcher:       FetcherConfig{Policy: pol},
		Retry:         RetryPolicy{Attempts: 1},
		NoDeadLetters: true,
		Logger:        zerolog.New(zerolog.NewTestWriter(b.t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		b.t.Fatalf("start executor %s: %v", id, err)
	}
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx) // a second Shutdown is harmless
	})
	return e
}

// enqueue stores a job for testOrigin that fetches url and returns its id.
func (b *bench) enqueue(url string) string {
	b.t.Helper()
	job := &broker.Job{ID: nuid.Next(), Origin: testOrigin, URL: url, ReceivedAt: time.Now().UnixNano()}
	data, err := job.Encode()
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.js.Publish(ctx, broker.Subjects{}.Job(testOrigin), data, jetstream.WithMsgID(job.ID)); err != nil {
		b.t.Fatalf("enqueue: %v", err)
	}
	return job.ID
}

// streamMsgs is the number of messages in a stream.
func (b *bench) streamMsgs(name string) uint64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		b.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// consumer is the executors consumer's current state.
func (b *bench) consumer() *jetstream.ConsumerInfo {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := broker.EnsureJobsConsumer(ctx, b.js, broker.Subjects{}, testOrigin)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	return info
}

// settled waits until the job is acknowledged (gone from the work-queue
// stream, nothing pending at the consumer) and then returns every stored
// result. With the job gone no executor can produce another one.
func (b *bench) settled(timeout time.Duration) []*broker.Result {
	b.t.Helper()
	testutil.Eventually(b.t, timeout, func() bool {
		ci := b.consumer()
		return b.streamMsgs(broker.JobsStream) == 0 && ci.NumAckPending == 0 && ci.NumPending == 0
	}, "job acknowledged")
	n := b.streamMsgs(broker.ResultsStream)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, broker.ResultsStream)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	var out []*broker.Result
	for seq := info.State.FirstSeq; n > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			b.t.Fatalf("result %d: %v", seq, err)
		}
		r, err := broker.DecodeResult(m.Data)
		if err != nil {
			b.t.Fatalf("result %d: %v", seq, err)
		}
		out = append(out, r)
	}
	return out
}

// wantOneResult checks that results holds exactly one successful result for
// job, from delivery attempt by executor exec.
func wantOneResult(t *testing.T, results []*broker.Result, job string, attempt int, exec, body string) {
	t.Helper()
	if len(results) != 1 {
		t.Fatalf("got %d results, want exactly 1: %+v", len(results), results)
	}
	r := results[0]
	if r.JobID != job || r.Error != nil || r.Status != http.StatusOK || string(r.Body) != body {
		t.Errorf("got result job %s status %d body %q error %v, want job %s status 200 body %q",
			r.JobID, r.Status, r.Body, r.Error, job, body)
	}
	if r.Attempt != attempt || r.Executor != exec {
		t.Errorf("got attempt %d from executor %q, want attempt %d from %q", r.Attempt, r.Executor, attempt, exec)
	}
}

// TestInProgressKeepsLongFetchFromRedelivery runs a fetch that lasts 2.5 ×
// AckWait: the executor's in-progress acks must keep the server from
// handing the job to anyone else, so it is delivered and fetched once.
func TestInProgressKeepsLongFetchFromRedelivery(t *testing.T) {
	const ackWait = 1500 * time.Millisecond
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage, AckWait: ackWait, MaxDeliver: 5})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, _ int64) {
		select {
		case <-time.After(ackWait * 5 / 2):
			fmt.Fprint(w, "slow")
		case <-r.Context().Done():
		}
	})
	// Two executors: a redelivery would have somewhere to go at once.
	b.executor("e1", tg)
	b.executor("e2", tg)
	job := b.enqueue(tg.URL + "/slow")

	results := b.settled(15 * time.Second)
	if len(results) != 1 {
		t.Fatalf("got %d results, want exactly 1: %+v", len(results), results)
	}
	wantOneResult(t, results, job, 1, results[0].Executor, "slow")
	if got := tg.hits.Load(); got != 1 {
		t.Errorf("target fetched %d times, want 1", got)
	}
	if ci := b.consumer(); ci.Delivered.Consumer != 1 || ci.NumRedelivered != 0 {
		t.Errorf("consumer delivered %d times (%d redelivered), want 1 delivery", ci.Delivered.Consumer, ci.NumRedelivered)
	}
}

// TestUnstorableResultIsRedelivered makes storing the result fail (the
// results stream refuses messages that large) and checks the executor
// leaves the job unacknowledged: it is delivered again, and once the results
// stream takes messages again the job ends with exactly one result.
func TestUnstorableResultIsRedelivered(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage, MaxDeliver: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := b.js.Stream(ctx, broker.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	orig := rs.CachedInfo().Config
	limited := orig
	limited.MaxMsgSize = 16 // smaller than any encoded result
	if _, err := b.js.UpdateStream(ctx, limited); err != nil {
		t.Fatalf("limit results stream: %v", err)
	}

	restored := make(chan struct{})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n >= 2 { // the redelivery waits until results can be stored again
			select {
			case <-restored:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, "stored at last")
	})
	b.executor("e1", tg)
	job := b.enqueue(tg.URL + "/")

	// The first result was refused; the job comes back (NakWithDelay).
	testutil.Eventually(t, 15*time.Second, func() bool { return tg.hits.Load() >= 2 }, "job delivered again after its result was refused")
	if n := b.streamMsgs(broker.ResultsStream); n != 0 {
		t.Fatalf("results stream holds %d messages while limited, want 0", n)
	}
	if n := b.streamMsgs(broker.JobsStream); n != 1 {
		t.Fatalf("jobs stream holds %d messages, want the unacknowledged job", n)
	}
	if _, err := b.js.UpdateStream(ctx, orig); err != nil {
		t.Fatalf("restore results stream: %v", err)
	}
	close(restored)

	wantOneResult(t, b.settled(15*time.Second), job, 2, "e1", "stored at last")
	if got := tg.hits.Load(); got != 2 {
		t.Errorf("target fetched %d times, want 2 (one per delivery)", got)
	}
	if got := b.consumer().Delivered.Consumer; got != 2 {
		t.Errorf("consumer delivered %d times, want 2", got)
	}
}

// TestForcedShutdownNaksInFlightJob shuts an executor down with an expired
// context while its fetch hangs: the fetch is aborted and the job Nak'ed
// (not acked, and not left to time out), so another executor gets it at
// once.
func TestForcedShutdownNaksInFlightJob(t *testing.T) {
	// AckWait far beyond the test's wait: only a Nak redelivers in time.
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage, AckWait: time.Minute})
	aborted := make(chan struct{}, 1)
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 { // hangs until the executor gives up on it
			<-r.Context().Done()
			aborted <- struct{}{}
			return
		}
		fmt.Fprint(w, "second try")
	})
	e1 := b.executor("e1", tg)
	job := b.enqueue(tg.URL + "/hang")
	testutil.Eventually(t, 10*time.Second, func() bool { return tg.hits.Load() == 1 }, "fetch started")

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := e1.Shutdown(expired); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with an expired context: got %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-aborted:
	case <-time.After(10 * time.Second):
		t.Fatal("the hanging fetch was not aborted by the forced shutdown")
	}
	if n := b.streamMsgs(broker.ResultsStream); n != 0 {
		t.Fatalf("results stream holds %d messages after the aborted fetch, want 0", n)
	}

	b.executor("e2", tg)
	wantOneResult(t, b.settled(15*time.Second), job, 2, "e2", "second try")
}

// TestStartAfterShutdown checks that a stopped executor cannot be started
// again.
func TestStartAfterShutdown(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage})
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request, _ int64) {})
	e := b.executor("e1", tg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := e.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Shutdown: got %v, want ErrStopped", err)
	}

	// Also when it was never started.
	pol, err := netpolicy.New(netpolicy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := New(testutil.Connect(t, b.srv), Config{Fetcher: FetcherConfig{Policy: pol}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown of a never-started executor: %v", err)
	}
	if err := fresh.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Shutdown (never started): got %v, want ErrStopped", err)
	}
}

// TestLargeResultsTakeTheBulkLane: a result of broker.BulkResultBytes or
// more goes to the bulk lane when its job says the origin reads it, to the
// small lane when it does not (an origin of an older version), and to the
// small lane too when the results stream has no bulk lane (provisioned
// again by a process of an older version during an upgrade): never lost.
func TestLargeResultsTakeTheBulkLane(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage})
	big := strings.Repeat("x", broker.BulkResultBytes)
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, _ int64) {
		if r.URL.Path == "/small" {
			fmt.Fprint(w, "small")
			return
		}
		fmt.Fprint(w, big)
	})
	b.executor("e1", tg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := b.js.Stream(ctx, broker.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	s := broker.Subjects{}
	run := func(path string, bulkLane bool) string {
		t.Helper()
		job := &broker.Job{ID: nuid.Next(), Origin: testOrigin, URL: tg.URL + path, ReceivedAt: time.Now().UnixNano(), BulkLane: bulkLane}
		data, err := job.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.Publish(ctx, s.Job(testOrigin), data, jetstream.WithMsgID(job.ID)); err != nil {
			t.Fatal(err)
		}
		var subj string
		testutil.Eventually(t, 15*time.Second, func() bool {
			m, err := st.GetLastMsgForSubject(ctx, s.RecordOf(testOrigin, job.ID))
			if err == nil {
				subj = m.Subject
			}
			return err == nil
		}, "the job's result stored")
		return subj
	}
	if subj := run("/big", true); !strings.HasPrefix(subj, s.BulkResultOf(testOrigin, "")) {
		t.Errorf("large result of a job whose origin reads the bulk lane on %s, want the bulk lane", subj)
	}
	if subj := run("/small", true); !strings.HasPrefix(subj, s.ResultOf(testOrigin, "")) {
		t.Errorf("small result on %s, want the small lane", subj)
	}
	if subj := run("/big", false); !strings.HasPrefix(subj, s.ResultOf(testOrigin, "")) {
		t.Errorf("large result of an older origin's job on %s, want the small lane", subj)
	}
	// The stream without the bulk lane, as an older version provisions it.
	cfg := st.CachedInfo().Config
	cfg.Subjects = []string{s.Result("*"), s.ResultOf("*", "*")}
	if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if subj := run("/big", true); !strings.HasPrefix(subj, s.ResultOf(testOrigin, "")) {
		t.Errorf("large result without a bulk lane in the stream on %s, want the small lane", subj)
	}
}
