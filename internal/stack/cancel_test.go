package stack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// expectCanceled reads the canceled reply to cancel frame id and then the
// canceled final frame of fetch fetchID (in this order, on this connection).
func expectCanceled(t *testing.T, c *testutil.WSClient, id, fetchID, job string) testutil.Frame {
	t.Helper()
	if f := c.Read(); f.Type != "canceled" || f.ID != id || f.Job != job {
		t.Fatalf("cancel reply %+v, want canceled for %s", f, job)
	}
	f := c.Read()
	if f.Type != "error" || f.Code != "canceled" || f.ID != fetchID || f.Job != job {
		t.Fatalf("final frame %+v, want error canceled for %s", f, fetchID)
	}
	return f
}

func TestCancelQueuedJobIsNeverFetched(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, func(c *config.Config) {
		ct.allow(c)
		c.Executor.Count = 0 // queued until an executor comes
	})
	c := testutil.DialWS(t, st.OriginWS())
	watcher := testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "q", "url": ct.URL + "/queued"})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v", enq)
	}
	watcher.SendJSON(map[string]any{"type": "get-result", "id": "w", "job": enq.Job})
	if f := watcher.Read(); f.Type != "pending" || f.State != "queued" {
		t.Fatalf("watcher: %+v, want pending queued", f)
	}
	c.SendJSON(map[string]any{"type": "cancel", "id": "x", "job": enq.Job})
	expectCanceled(t, c, "x", "q", enq.Job)
	if f := watcher.Read(); f.Type != "error" || f.Code != "canceled" || f.ID != "w" {
		t.Fatalf("attached watcher got %+v, want canceled", f)
	}
	// Twice: the job has its final frame now.
	c.SendJSON(map[string]any{"type": "cancel", "id": "x2", "job": enq.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "already_finished" || f.ID != "x2" {
		t.Fatalf("second cancel: %+v, want already_finished", f)
	}

	// Now an executor comes: it takes the job and drops it unfetched.
	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := st.cfg.Executor.Config
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ex, err := executor.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ex.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ex.Shutdown(context.Background())
	js, _ := jetstream.New(nc)
	testutil.Eventually(t, 15*time.Second, func() bool {
		n, err := testutil.JobsStored(ctx, js, broker.Subjects{})
		return err == nil && n == 0
	}, "the canceled job was not taken off the jobs stream")
	if n := ct.count("/queued"); n != 0 {
		t.Fatalf("canceled queued job reached the target %d times", n)
	}
}

func TestCancelRunningFetchIsAborted(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, ct.allow)
	c := testutil.DialWS(t, st.OriginWS())
	uri := "/running?ms=20000"
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "r", "key": "long-one", "url": ct.URL + uri})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v", enq)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return ct.count(uri) == 1 }, "the fetch did not start")
	sent := time.Now()
	c.SendJSON(map[string]any{"type": "cancel", "id": "x", "key": "long-one"})
	f := expectCanceled(t, c, "x", "r", enq.Job)
	if !strings.Contains(f.Message, "may already have reached") {
		t.Errorf("message %q should say the request may have reached the destination", f.Message)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return ct.abortedCount(uri) == 1 }, "the running fetch was not aborted")
	t.Logf("running fetch aborted %v after the cancel", time.Since(sent))
	// A finished job, and an unknown one.
	enq2, _ := c.Fetch("f", ct.URL+"/fast", nil)
	c.SendJSON(map[string]any{"type": "cancel", "id": "x2", "job": enq2.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "already_finished" {
		t.Fatalf("cancel of a finished job: %+v", f)
	}
	c.SendJSON(map[string]any{"type": "cancel", "id": "x3", "key": "no-such-key"})
	if f := c.Read(); f.Type != "error" || f.Code != "not_found" || f.ID != "x3" {
		t.Fatalf("cancel of an unknown key: %+v", f)
	}
	c.SendJSON(map[string]any{"type": "cancel", "id": "x4"})
	if f := c.Read(); f.Type != "error" || f.Code != "bad_request" {
		t.Fatalf("cancel without job or key: %+v", f)
	}
}

func TestCancelDelayedJob(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, ct.allow)
	c := testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "d", "delay_ms": 1000, "url": ct.URL + "/delayed"})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v", enq)
	}
	due := time.Now().Add(time.Second)
	c.SendJSON(map[string]any{"type": "cancel", "id": "x", "job": enq.Job})
	expectCanceled(t, c, "x", "d", enq.Job)
	// Past its due time (and the server's schedule tick), nothing ran.
	time.Sleep(time.Until(due) + 1500*time.Millisecond)
	if n := ct.count("/delayed"); n != 0 {
		t.Fatalf("canceled delayed job reached the target %d times", n)
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": enq.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "canceled" || f.ID != "g" {
		t.Fatalf("get-result of a canceled job: %+v, want its canceled final frame", f)
	}
}

// TestCanceledRecordSurvivesRestart: a canceled job's final frame is its
// finished record in the results stream (on its result subject), so an
// origin that restarted still answers get-result with it, and the job is
// never fetched.
func TestCanceledRecordSurvivesRestart(t *testing.T) {
	ct := newCountingTarget(t)
	r := newRestartable(t, ct.allow)
	start, stop := r.start, r.stop
	st := start(0)
	c := testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "q", "url": ct.URL + "/queued"})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v", enq)
	}
	c.SendJSON(map[string]any{"type": "cancel", "id": "x", "job": enq.Job})
	expectCanceled(t, c, "x", "q", enq.Job)
	stop(st)

	st = start(1)
	defer stop(st)
	c = testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": enq.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "canceled" || f.ID != "g" || f.Job != enq.Job {
		t.Fatalf("get-result after restart: %+v, want the canceled final frame", f)
	}
	c.SendJSON(map[string]any{"type": "cancel", "id": "x2", "job": enq.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "already_finished" || f.ID != "x2" {
		t.Fatalf("cancel after restart: %+v, want already_finished", f)
	}
	// The executor drops the canceled job unfetched.
	js := testutil.JetStream(t, st.Server())
	testutil.Eventually(t, 15*time.Second, func() bool {
		n, err := testutil.JobsStored(context.Background(), js, broker.Subjects{})
		return err == nil && n == 0
	}, "the canceled job was not taken off the jobs stream")
	if n := ct.count("/queued"); n != 0 {
		t.Fatalf("canceled job reached the target %d times", n)
	}
}
