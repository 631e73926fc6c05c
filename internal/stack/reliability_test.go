package stack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

func TestQueueFullUnderTinyStreamLimit(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Streams.MaxJobs = 5; c.Executor.Count = 0 })
	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 10; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "q" + itoa(i), "url": st.TargetURL() + "/delay"})
	}
	counts := map[string]int{}
	for i := 0; i < 10; i++ {
		f := c.Read()
		counts[f.Type+":"+f.Code]++
	}
	if counts["enqueued:"] != 5 || counts["error:queue_full"] != 5 {
		t.Fatalf("frames %v, want 5 enqueued and 5 queue_full", counts)
	}
}

func TestPerConnectionInFlightCap(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.MaxInFlight = 3; c.Executor.Count = 0 })
	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 5; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "f" + itoa(i), "url": st.TargetURL() + "/delay"})
	}
	counts := map[string]int{}
	for i := 0; i < 5; i++ {
		f := c.Read()
		counts[f.Type+":"+f.Code]++
	}
	if counts["enqueued:"] != 3 || counts["error:queue_full"] != 2 {
		t.Fatalf("frames %v, want 3 enqueued and 2 queue_full", counts)
	}
}

func TestSlowClientDoesNotDelayFastOne(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.Origin.SendQueue = 16
		c.Origin.WriteTimeout = 500 * time.Millisecond
	})
	// The slow client asks for large bodies and never reads: more than the
	// socket buffers hold, so the origin's writer stalls.
	slow := testutil.DialWSSmallBuffer(t, st.OriginWS()).Conn
	for i := 0; i < 60; i++ {
		if err := slow.WriteJSON(map[string]any{"type": "start-fetch", "id": "s" + itoa(i), "url": st.TargetURL() + "/bytes?n=1000000"}); err != nil {
			break // closed on us already: fine
		}
	}
	fast := testutil.DialWS(t, st.OriginWS())
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, res := fast.Fetch("x"+itoa(i), st.TargetURL()+"/delay?ms=0", nil); res.Type != "result" {
			t.Fatalf("fast client got %+v", res)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("20 fetches took %v for the fast client", d)
	}
	// The slow client is eventually disconnected: the origin gives up on it
	// (write timeout, or a full queue) while it still does not read. Reading
	// before that would make it a client that reads.
	testutil.Eventually(t, 30*time.Second, func() bool {
		open, _ := testutil.MetricValue(t, st.Metrics().Gatherer(), origin.MetricWSConnections, nil)
		return open == 1 // the fast client only
	})
	// Either way it counts as a slow client.
	if n, _ := testutil.MetricValue(t, st.Metrics().Gatherer(), origin.MetricSlowClientsTotal, nil); n != 1 {
		t.Errorf("%v slow clients counted, want 1 (closed by a write timeout or a full queue)", n)
	}
	_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	var closeErr error
	for closeErr == nil {
		_, _, closeErr = slow.ReadMessage()
	}
	// 1008 with a reason when the close frame gets through; 1006 when the
	// client's own receive buffer is still full of unread frames.
	if ce, ok := closeErr.(*websocket.CloseError); !ok || (ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseAbnormalClosure) {
		t.Errorf("slow client ended with %v, want close 1008 or 1006", closeErr)
	}
}

func TestQueuedJobsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *config.Config) { c.NATS.DataDir = dir }
	cfg := EphemeralConfig()
	mod(&cfg)
	cfg.Executor.Count = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	st, err := Start(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	c := testutil.DialWS(t, st.OriginWS())
	const n = 20
	jobs := make([]string, 0, n)
	for i := 0; i < n; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "p" + itoa(i), "url": st.TargetURL() + "/echo?i=" + itoa(i)})
	}
	for len(jobs) < n {
		f := c.Read()
		if f.Type != "enqueued" {
			t.Fatalf("got %+v, want enqueued", f)
		}
		jobs = append(jobs, f.Job)
	}
	// Stop with everything queued and no executor; the drain gives up quickly.
	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_ = st.Shutdown(sctx)
	scancel()

	// Same data dir, now with an executor (and new ports).
	cfg2 := EphemeralConfig()
	mod(&cfg2)
	st2, err := Start(ctx, cfg2, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Shutdown(context.Background())
	// The target moved with the restart; the queued jobs still point at the
	// old address, so allow-listing does not apply to them: their outcome is
	// what counts. Each must end with exactly one final result.
	c2 := testutil.DialWS(t, st2.OriginWS())
	for i, job := range jobs {
		// A restarted origin finds jobs queued from before in the jobs
		// stream: pending (or the final frame if it came already), never
		// not_found.
		c2.SendJSON(map[string]any{"type": "get-result", "id": "g" + itoa(i), "job": job})
		f := c2.Read()
		if f.Type == "pending" {
			if f.Job != job || (f.State != "queued" && f.State != "running") {
				t.Fatalf("job %s after restart: %+v, want pending queued or running", job, f)
			}
			f = c2.Read()
		}
		if f.ID != "g"+itoa(i) || f.Job != job || (f.Type != "result" && f.Type != "error") || f.Code == "not_found" {
			t.Fatalf("job %s after restart: got %+v, want its final frame", job, f)
		}
	}
	if got := st2.Origin().Stats().Finished; got != n {
		t.Errorf("origin finished %d jobs after restart, want %d", got, n)
	}
}

func TestGetResultForFinishedJob(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	enq, res := c.Fetch("a", st.TargetURL()+"/echo?x=1", nil)
	if res.Type != "result" {
		t.Fatal(res)
	}
	c2 := testutil.DialWS(t, st.OriginWS())
	c2.SendJSON(map[string]any{"type": "get-result", "id": "again", "job": enq.Job})
	f := c2.Read()
	if f.Type != "result" || f.ID != "again" || f.Job != enq.Job || f.Body != res.Body {
		t.Fatalf("get-result got %+v, want the same result under id again", f)
	}
	c2.SendJSON(map[string]any{"type": "get-result", "id": "nope", "job": "no-such-job"})
	if f := c2.Read(); f.Type != "error" || f.Code != "not_found" || f.ID != "nope" {
		t.Fatalf("unknown job got %+v, want not_found", f)
	}
}

// TestDeadLetterPath plays a crashing executor: it takes the job from the
// shared consumer and never acks, MaxDeliver times. The job must end as one
// dead_letter error frame, sit in the dead-letter stream, and replay.
func TestDeadLetterPath(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.Executor.Count = 0
		c.Streams.AckWait = 300 * time.Millisecond
		c.Streams.MaxDeliver = 2
	})
	c := testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "dead", "url": st.TargetURL() + "/echo?dead=1"})
	enq := c.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v", enq)
	}
	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The origin created its jobs consumer at start.
	cons, err := js.Consumer(ctx, broker.JobsStream, broker.JobsConsumer(st.cfg.Origin.ID))
	if err != nil {
		t.Fatal(err)
	}
	for d := 1; d <= 2; d++ {
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			meta, _ := m.Metadata()
			if int(meta.NumDelivered) != d {
				t.Fatalf("delivery %d has NumDelivered %d", d, meta.NumDelivered)
			}
		} // no ack: the "executor" crashed
		if got != 1 {
			t.Fatalf("delivery %d: got %d messages (%v)", d, got, msgs.Error())
		}
	}
	// Now an executor comes up; its dead-letter processor handles the
	// advisory that was captured while none ran.
	cfg := EphemeralConfig()
	cfg.NATS.Embedded, cfg.NATS.URL = false, st.NATSURL()
	cfg.Origin.Enabled, cfg.Runtime.Enabled, cfg.Target.Enabled = false, false, false
	cfg.Executor.Policy.Allow = []string{strings.TrimPrefix(st.TargetURL(), "http://")}
	cfg.Streams.AckWait, cfg.Streams.MaxDeliver = 300*time.Millisecond, 2
	ex, err := Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Shutdown(context.Background())

	f := c.Read()
	if f.Type != "error" || f.Code != "dead_letter" || f.ID != "dead" || f.Job != enq.Job {
		t.Fatalf("got %+v, want dead_letter error for the job", f)
	}
	dead, err := broker.ListDeadLetters(ctx, js, 10)
	if err != nil || len(dead) != 1 || dead[0].Job == nil || dead[0].Job.ID != enq.Job || dead[0].Deliveries != 2 {
		t.Fatalf("dead letters %+v (%v), want the one job with 2 deliveries", dead, err)
	}
	newID, err := broker.ReplayDeadLetter(ctx, js, broker.Subjects{}, dead[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := broker.ListDeadLetters(ctx, js, 10); len(left) != 0 {
		t.Errorf("after replay %d dead letters left, want 0", len(left))
	}
	// The replayed job runs on the live executor; its result is kept for get-result.
	for {
		c.SendJSON(map[string]any{"type": "get-result", "id": "replayed", "job": newID})
		f = c.Read()
		if f.Type == "result" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replayed job %s never finished: last %+v", newID, f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f.Status != 200 || !strings.Contains(f.Body, "dead=1") {
		t.Fatalf("replayed result %+v", f)
	}
}

func TestPerConnectionRateLimit(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.RatePerConn = 1; c.Origin.RateBurst = 3; c.Executor.Count = 0 })
	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 8; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "r" + itoa(i), "url": st.TargetURL() + "/delay"})
	}
	counts := map[string]int{}
	for i := 0; i < 8; i++ {
		f := c.Read()
		counts[f.Type+":"+f.Code]++
	}
	// The burst of 3 passes; the rest of a same-instant burst is refused.
	if counts["enqueued:"] != 3 || counts["error:queue_full"] != 5 {
		t.Fatalf("frames %v, want 3 enqueued and 5 queue_full", counts)
	}
	// Another connection has its own bucket.
	c2 := testutil.DialWS(t, st.OriginWS())
	c2.SendJSON(map[string]any{"type": "start-fetch", "id": "other", "url": st.TargetURL() + "/delay"})
	if f := c2.Read(); f.Type != "enqueued" {
		t.Fatalf("second connection got %+v, want enqueued", f)
	}
}

// TestGetResultOnRunningJobAttaches: get-result for a job still running
// answers pending and attaches the asking connection, which then gets the
// final frame under its get-result id; the connection that started the job
// gets its own. PROTOCOL.md §1.1.
func TestGetResultOnRunningJobAttaches(t *testing.T) {
	release := make(chan struct{})
	hold := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte("done"))
	}))
	defer hold.Close()
	var once sync.Once
	defer once.Do(func() { close(release) })
	st := startStack(t, func(c *config.Config) {
		c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, strings.TrimPrefix(hold.URL, "http://"))
	})
	a := testutil.DialWS(t, st.OriginWS())
	a.SendJSON(map[string]any{"type": "start-fetch", "id": "f", "url": hold.URL + "/"})
	enq := a.Read()
	if enq.Type != "enqueued" {
		t.Fatalf("got %+v, want enqueued", enq)
	}
	b := testutil.DialWS(t, st.OriginWS())
	asks := 0
	testutil.Eventually(t, 10*time.Second, func() bool {
		// running once an executor holds it (it waits on release).
		b.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": enq.Job})
		asks++
		p := b.Read()
		if p.Type != "pending" || p.ID != "g" || p.Job != enq.Job || (p.State != "queued" && p.State != "running") {
			t.Fatalf("get-result on a running job: got %+v, want pending for job %s", p, enq.Job)
		}
		return p.State == "running"
	})
	once.Do(func() { close(release) })
	// Each ask attached b once: each gets the final frame, once.
	for i := 0; i < asks; i++ {
		got := b.Read()
		if got.Type != "result" || got.ID != "g" || got.Job != enq.Job || got.Body != "done" {
			t.Fatalf("attached connection got %+v, want the result under id g", got)
		}
	}
	if f := a.Read(); f.Type != "result" || f.ID != "f" || f.Body != "done" {
		t.Fatalf("starting connection got %+v, want its result under id f", f)
	}
}
