package stack

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// countingTarget is an HTTP server on loopback that counts the requests
// for each path+query, answering after the `ms` query parameter's delay,
// with `n` bytes when asked (else a body naming the request).
type countingTarget struct {
	*httptest.Server
	mu      sync.Mutex
	seen    map[string]int
	aborted map[string]int // requests whose client went away before the answer
}

func newCountingTarget(t *testing.T) *countingTarget {
	ct := &countingTarget{seen: make(map[string]int), aborted: make(map[string]int)}
	ct.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct.mu.Lock()
		ct.seen[r.URL.RequestURI()]++
		ct.mu.Unlock()
		if d, err := time.ParseDuration(r.URL.Query().Get("ms") + "ms"); err == nil && d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				ct.mu.Lock()
				ct.aborted[r.URL.RequestURI()]++
				ct.mu.Unlock()
				return
			}
		}
		if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && n > 0 && n <= 1<<20 {
			_, _ = w.Write(bytes.Repeat([]byte{'x'}, n))
			return
		}
		_, _ = w.Write([]byte("body of " + r.URL.RequestURI()))
	}))
	t.Cleanup(ct.Close)
	return ct
}

func (ct *countingTarget) count(uri string) int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.seen[uri]
}

// total is every request seen; totalAborted those whose client went away.
func (ct *countingTarget) total() int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	n := 0
	for _, c := range ct.seen {
		n += c
	}
	return n
}

func (ct *countingTarget) totalAborted() int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	n := 0
	for _, c := range ct.aborted {
		n += c
	}
	return n
}

func (ct *countingTarget) abortedCount(uri string) int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.aborted[uri]
}

func (ct *countingTarget) allow(c *config.Config) {
	c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, strings.TrimPrefix(ct.URL, "http://"))
}

// finalFor reads frames until the final frame of id, collecting the
// enqueued frame on the way; other ids' frames go to others.
func readUntilFinals(t *testing.T, c *testutil.WSClient, ids ...string) (enq, final map[string]testutil.Frame) {
	t.Helper()
	enq, final = map[string]testutil.Frame{}, map[string]testutil.Frame{}
	for len(final) < len(ids) {
		f := c.Read()
		switch {
		case f.Type == "enqueued":
			if _, dup := enq[f.ID]; dup {
				t.Fatalf("second enqueued for %s: %+v", f.ID, f)
			}
			enq[f.ID] = f
		case f.Final():
			if _, dup := final[f.ID]; dup {
				t.Fatalf("second final frame for %s: %+v", f.ID, f)
			}
			final[f.ID] = f
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	return enq, final
}

func TestKeyedStartFetchIsIdempotent(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, ct.allow)
	c := testutil.DialWS(t, st.OriginWS())
	uri := "/k1?ms=200"
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "a", "key": "order-1", "url": ct.URL + uri})
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "b", "key": "order-1", "url": ct.URL + "/other"})
	enq, final := readUntilFinals(t, c, "a", "b")
	if enq["a"].Duplicate || !enq["b"].Duplicate || enq["a"].Job == "" || enq["a"].Job != enq["b"].Job {
		t.Fatalf("enqueued frames %+v, want the first new and the second a duplicate of the same job", enq)
	}
	if final["a"].Type != "result" || final["a"].Body != final["b"].Body || final["a"].Job != final["b"].Job || final["b"].Body != "body of "+uri {
		t.Fatalf("final frames differ or wrong: %+v", final)
	}
	// After the job finished: duplicate, then the stored final frame at once.
	enq2, final2 := c.Fetch("c", ct.URL+"/third", map[string]any{"key": "order-1"})
	if !enq2.Duplicate || enq2.Job != enq["a"].Job || final2.ID != "c" || final2.Body != final["a"].Body {
		t.Fatalf("late duplicate: enqueued %+v final %+v", enq2, final2)
	}
	// get-result by key, and an unknown key.
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "key": "order-1"})
	if f := c.Read(); f.Type != "result" || f.ID != "g" || f.Job != enq["a"].Job {
		t.Fatalf("get-result by key: %+v", f)
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g2", "key": "never-used"})
	if f := c.Read(); f.Type != "error" || f.Code != "not_found" || f.ID != "g2" {
		t.Fatalf("get-result of an unknown key: %+v", f)
	}
	// Asking about an unknown key stores nothing: the key still starts a job.
	enq3, final3 := c.Fetch("n", ct.URL+"/never", map[string]any{"key": "never-used"})
	if enq3.Duplicate || final3.Type != "result" || ct.count("/never") != 1 {
		t.Fatalf("first use of a key asked about before: enqueued %+v final %+v, target %d", enq3, final3, ct.count("/never"))
	}
	if n := ct.count(uri) + ct.count("/other") + ct.count("/third"); n != 1 {
		t.Fatalf("target saw %d requests for one key, want 1", n)
	}
	// Bad keys are refused with a typed error.
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "bad", "key": strings.Repeat("x", 129), "url": ct.URL + "/x"})
	if f := c.Read(); f.Type != "error" || f.Code != "bad_request" || f.ID != "bad" {
		t.Fatalf("over-long key: %+v", f)
	}
}

func TestSameKeyOnTwoConnectionsAtOnce(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, ct.allow)
	a := testutil.DialWS(t, st.OriginWS())
	b := testutil.DialWS(t, st.OriginWS())
	const keys = 20
	for i := 0; i < keys; i++ {
		k := "same-" + itoa(i)
		frame := func(id string) map[string]any {
			return map[string]any{"type": "start-fetch", "id": id, "key": k, "url": ct.URL + "/" + k + "?ms=5"}
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); a.SendJSON(frame("x")) }()
		go func() { defer wg.Done(); b.SendJSON(frame("y")) }()
		wg.Wait()
		ea, fa := readUntilFinals(t, a, "x")
		eb, fb := readUntilFinals(t, b, "y")
		if ea["x"].Job != eb["y"].Job || ea["x"].Duplicate == eb["y"].Duplicate {
			t.Fatalf("key %s: enqueued %+v and %+v, want one new and one duplicate of the same job", k, ea["x"], eb["y"])
		}
		if fa["x"].Type != "result" || fa["x"].Body != fb["y"].Body || fa["x"].Status != fb["y"].Status {
			t.Fatalf("key %s: final frames differ: %+v vs %+v", k, fa["x"], fb["y"])
		}
		if n := ct.count("/" + k + "?ms=5"); n != 1 {
			t.Fatalf("key %s reached the target %d times, want 1", k, n)
		}
	}
}

func TestKeySurvivesOriginRestart(t *testing.T) {
	ct := newCountingTarget(t)
	r := newRestartable(t, ct.allow)
	start, stop := r.start, r.stop
	// One key finished before the restart, one still queued (no executor).
	st := start(1)
	c := testutil.DialWS(t, st.OriginWS())
	enqDone, _ := c.Fetch("d", ct.URL+"/done", map[string]any{"key": "done"})
	stop(st)
	st = start(0)
	c = testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "q", "key": "queued", "url": ct.URL + "/queued"})
	enqQueued := c.Read()
	if enqQueued.Type != "enqueued" || enqQueued.Duplicate {
		t.Fatalf("got %+v, want enqueued", enqQueued)
	}
	stop(st)

	st = start(1)
	defer stop(st)
	c = testutil.DialWS(t, st.OriginWS())
	enq, final := c.Fetch("d2", ct.URL+"/done", map[string]any{"key": "done"})
	if !enq.Duplicate || enq.Job != enqDone.Job || final.Type != "result" || final.ID != "d2" {
		t.Fatalf("finished key after restart: enqueued %+v final %+v", enq, final)
	}
	enq, final = c.Fetch("q2", ct.URL+"/queued", map[string]any{"key": "queued"})
	if !enq.Duplicate || enq.Job != enqQueued.Job || final.Type != "result" || final.ID != "q2" {
		t.Fatalf("queued key after restart: enqueued %+v final %+v", enq, final)
	}
	if ct.count("/done") != 1 || ct.count("/queued") != 1 {
		t.Fatalf("target saw /done %d and /queued %d times, want 1 each", ct.count("/done"), ct.count("/queued"))
	}
}

// TestResultExpired: a job that finished here but whose result left the
// store (here: purged from the results stream) is result_expired, for get-result
// and for a duplicate key, instead of not_found or a wait that never ends.
func TestResultExpired(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	enq, final := c.Fetch("a", st.TargetURL()+"/echo", map[string]any{"key": "gone"})
	if final.Type != "result" {
		t.Fatalf("got %+v", final)
	}
	rs, err := testutil.JetStream(t, st.Server()).Stream(context.Background(), broker.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(context.Background(), jetstream.WithPurgeSubject(broker.Subjects{}.ResultOf("o1", enq.Job))); err != nil {
		t.Fatal(err)
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": enq.Job})
	if f := c.Read(); f.Type != "error" || f.Code != "result_expired" || f.ID != "g" {
		t.Fatalf("get-result: %+v, want result_expired", f)
	}
	e2, f2 := c.Fetch("b", st.TargetURL()+"/echo", map[string]any{"key": "gone"})
	if !e2.Duplicate || f2.Type != "error" || f2.Code != "result_expired" || f2.ID != "b" {
		t.Fatalf("duplicate key: enqueued %+v final %+v, want duplicate then result_expired", e2, f2)
	}
}

// TestKeyReusedAfterItsWindow: once its key window has passed, a key names
// a new job, even while the earlier job's record is still retained on the
// same result subject: the new job is fetched, its result replaces the
// earlier record (broker.StoreAfterRefusal), its client gets it, and
// get-result by the key answers the new one.
func TestKeyReusedAfterItsWindow(t *testing.T) {
	ct := newCountingTarget(t)
	st := startStack(t, func(c *config.Config) {
		ct.allow(c)
		c.Streams.KeyWindow = time.Second
		c.Streams.DuplicateWindow = time.Second
	})
	c := testutil.DialWS(t, st.OriginWS())
	enq1, final1 := c.Fetch("a", ct.URL+"/gen1", map[string]any{"key": "reused"})
	if enq1.Duplicate || final1.Type != "result" || final1.Body != "body of /gen1" {
		t.Fatalf("first use: enqueued %+v final %+v", enq1, final1)
	}
	// Within the window the key is a duplicate; past it, a new job. Poll
	// rather than sleep: each duplicate answers at once.
	var enq2, final2 testutil.Frame
	testutil.Eventually(t, 30*time.Second, func() bool {
		enq2, final2 = c.Fetch("b", ct.URL+"/gen2", map[string]any{"key": "reused"})
		return !enq2.Duplicate
	}, "the key never named a new job after its window")
	if enq2.Job != enq1.Job || final2.Type != "result" || final2.Body != "body of /gen2" {
		t.Fatalf("second job under the key: enqueued %+v final %+v, want the same id and the new body", enq2, final2)
	}
	if ct.count("/gen1") != 1 || ct.count("/gen2") != 1 {
		t.Fatalf("target saw /gen1 %d and /gen2 %d times, want 1 each", ct.count("/gen1"), ct.count("/gen2"))
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "key": "reused"})
	if f := c.Read(); f.Type != "result" || f.Body != "body of /gen2" {
		t.Fatalf("get-result by the key: %+v, want the new job's result", f)
	}
}
