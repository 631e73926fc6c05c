package stack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestDelayedFetch(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	watcher := testutil.DialWS(t, st.OriginWS())
	sent := time.Now()
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "d", "key": "later", "delay_ms": 2000, "url": st.TargetURL() + "/echo"})
	enq := c.Read()
	if enq.Type != "enqueued" || enq.ID != "d" {
		t.Fatalf("got %+v, want enqueued", enq)
	}
	// Waiting: pending, state scheduled, by key from another connection.
	watcher.SendJSON(map[string]any{"type": "get-result", "id": "w", "key": "later"})
	if f := watcher.Read(); f.Type != "pending" || f.State != "scheduled" || f.Job != enq.Job {
		t.Fatalf("get-result while delayed: %+v, want pending scheduled", f)
	}
	f := c.Read()
	took := time.Since(sent)
	if f.Type != "result" || f.Status != 200 || f.ID != "d" {
		t.Fatalf("got %+v, want the result", f)
	}
	if took < 2000*time.Millisecond {
		t.Fatalf("delayed result after %v, want no earlier than 2 s", took)
	}
	if f.Timing == nil || f.Timing.DelayMS != 2000 {
		t.Fatalf("timing %+v, want delay_ms 2000", f.Timing)
	}
	if w := watcher.Read(); w.Type != "result" || w.ID != "w" || w.Job != enq.Job {
		t.Fatalf("attached watcher got %+v", w)
	}
	t.Logf("2,000 ms delay: result after %v", took)
	// Out of range.
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "x", "delay_ms": 86_400_001, "url": st.TargetURL() + "/echo"})
	if f := c.Read(); f.Type != "error" || f.Code != "bad_request" {
		t.Fatalf("delay_ms over a day: %+v", f)
	}
}

func TestDelayedFetchSurvivesRestart(t *testing.T) {
	r := newRestartable(t, nil)
	start := func() *Stack { return r.start(-1) }
	st := start()
	c := testutil.DialWS(t, st.OriginWS())
	sent := time.Now()
	// The target's port changes with the restart, so the job fetches a
	// closed port: its outcome (fetch_failed), not its body, is the point.
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "d", "key": "across", "delay_ms": 1500, "url": st.TargetURL() + "/echo"})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v, want enqueued", enq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_ = st.Shutdown(ctx)
	cancel()
	if time.Since(sent) >= 1500*time.Millisecond {
		t.Skip("the first stack took longer than the delay to stop; nothing left to show")
	}
	st = start()
	defer st.Shutdown(context.Background())
	c = testutil.DialWS(t, st.OriginWS())
	e2, f := c.Fetch("d2", st.TargetURL()+"/echo", map[string]any{"key": "across", "delay_ms": 1500})
	if !e2.Duplicate || e2.Job != enq.Job {
		t.Fatalf("after restart: %+v, want a duplicate of %s", e2, enq.Job)
	}
	if !f.Final() || f.ID != "d2" || f.Job != enq.Job {
		t.Fatalf("after restart: final %+v", f)
	}
	if took := time.Since(sent); took < 1500*time.Millisecond {
		t.Fatalf("delayed job ran after %v, before its delay", took)
	}
}

func TestDelayedJobsStoreFullIsQueueFull(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Streams.MaxDelayedBytes = 64 << 10 })
	c := testutil.DialWS(t, st.OriginWS())
	body := strings.Repeat("x", 8<<10)
	full := 0
	const n = 20 // 160 KiB of bodies into a 64 KiB store
	for i := 0; i < n; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "d" + itoa(i), "method": "POST", "body": body,
			"delay_ms": 60_000, "url": st.TargetURL() + "/echo"})
	}
	var enqueued []string
	for i := 0; i < n; i++ {
		f := c.Read()
		switch {
		case f.Type == "enqueued":
			enqueued = append(enqueued, f.Job)
		case f.Type == "error" && f.Code == "queue_full":
			full++
		default:
			t.Fatalf("got %+v", f)
		}
	}
	if full == 0 || len(enqueued) == 0 {
		t.Fatalf("%d enqueued, %d queue_full: want both", len(enqueued), full)
	}
	// Every job that was accepted is still scheduled: none was dropped.
	for i, job := range enqueued {
		c.SendJSON(map[string]any{"type": "get-result", "id": "g" + itoa(i), "job": job})
		if f := c.Read(); f.Type != "pending" || f.State != "scheduled" {
			t.Fatalf("accepted delayed job %s: %+v, want pending scheduled", job, f)
		}
	}
	t.Logf("%d delayed jobs accepted, %d refused with queue_full", len(enqueued), full)
}
