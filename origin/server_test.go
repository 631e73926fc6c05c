package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// These tests run an origin against a real embedded NATS server with
// JetStream, a real executor and an HTTP target on 127.0.0.1, and talk to it
// through a real WebSocket client.

// bench is an embedded server with the streams provisioned, a target that
// answers "hello", and (optionally) an executor allowed to fetch from it.
type bench struct {
	t       *testing.T
	srv     *broker.Server
	target  *httptest.Server
	streams broker.StreamsConfig
}

func newBench(t *testing.T, streams broker.StreamsConfig, withExecutor bool) *bench {
	t.Helper()
	srv := testutil.StartNATS(t)
	testutil.Provision(t, testutil.JetStream(t, srv), streams)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" { // a result for the bulk lane
			_, _ = w.Write([]byte(strings.Repeat("b", bigBody)))
			return
		}
		fmt.Fprint(w, "hello")
	}))
	t.Cleanup(target.Close)
	b := &bench{t: t, srv: srv, target: target, streams: streams}
	if withExecutor {
		b.startExecutor()
	}
	return b
}

func (b *bench) startExecutor() {
	b.t.Helper()
	pol, err := netpolicy.New(netpolicy.Config{Allow: []string{b.target.Listener.Addr().String()}})
	if err != nil {
		b.t.Fatal(err)
	}
	e, err := executor.New(testutil.Connect(b.t, b.srv), executor.Config{
		ID: "e1", Fetcher: executor.FetcherConfig{Policy: pol}, NoDeadLetters: true,
	})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		b.t.Fatalf("start executor: %v", err)
	}
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			b.t.Errorf("executor shutdown: %v", err)
		}
	})
}

// origin starts an origin on a free 127.0.0.1 port with cfg (ID, Listen and
// Logger filled in when empty) and shuts it down at test end.
func (b *bench) origin(cfg Config) *Server {
	b.t.Helper()
	if cfg.ID == "" {
		cfg.ID = "o1"
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(b.t)).Level(zerolog.ErrorLevel)
	if cfg.ResultRetention == 0 {
		cfg.ResultRetention = b.streams.FinishedTTL
	}
	s, err := New(testutil.Connect(b.t, b.srv), cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		b.t.Fatalf("start origin: %v", err)
	}
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx) // ErrServerClosed when the test shut it down already
	})
	return s
}

func wsURL(s *Server) string { return "ws://" + s.Addr() + "/ws" }

// TestUnconfirmedJobErrorCarriesJobID stops the NATS server before a
// start-fetch, so the job's publish is buffered by the client library and
// never acknowledged: the origin cannot tell whether the job was stored. The
// fetch must end with one internal error that carries the job id (the job
// may still run: the buffered publish is sent if the server comes back), and
// the connection stays usable.
func TestUnconfirmedJobErrorCarriesJobID(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, false)
	s := b.origin(Config{PublishTimeout: 200 * time.Millisecond})
	c := testutil.DialWS(t, wsURL(s))

	_ = b.srv.Shutdown(context.Background())
	start := time.Now()
	enq, final := c.Fetch("u1", b.target.URL+"/", nil)
	if enq.Type != "" {
		t.Fatalf("got %+v before the final frame, want no enqueued (nothing was confirmed)", enq)
	}
	if final.Type != "error" || final.ID != "u1" || final.Code != string(broker.CodeInternal) {
		t.Fatalf("got %+v, want an internal error for u1", final)
	}
	if final.Job == "" {
		t.Errorf("error frame has no job id, want the id of the job that may still run: %+v", final)
	}
	if !strings.Contains(final.Message, "may still run") || !strings.Contains(final.Message, "get-result") {
		t.Errorf("error message %q, want it to say the job may still run and to ask get-result", final.Message)
	}
	// Three publish timeouts of retries, then the verdict: not much more.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the verdict took %v", d)
	}
	// The session is still open: a frame still gets its answer.
	c.SendJSON(map[string]any{"type": "get-result", "id": "g"})
	if f := c.Read(); f.Type != "error" || f.ID != "g" || f.Code != string(broker.CodeBadRequest) {
		t.Fatalf("got %+v, want a bad_request error for the get-result without a job", f)
	}
	// With NATS gone the results consumer cannot drain: don't wait long.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// TestFinishedBucketDisabled runs an origin whose result retention is
// turned off (streams FinishedTTL < 0, result_retention -1s): fetches still
// end with their result, and get-result answers with an error that says it
// is turned off rather than pretending the job is unknown.
func TestFinishedBucketDisabled(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage, FinishedTTL: -1}, true)
	s := b.origin(Config{})
	c := testutil.DialWS(t, wsURL(s))
	var jobs []string
	for i := range 3 {
		id := fmt.Sprintf("f%d", i)
		enq, res := c.Fetch(id, b.target.URL+"/", nil)
		if res.Type != "result" || res.ID != id || res.Job != enq.Job || res.Status != 200 || res.Body != "hello" {
			t.Fatalf("fetch %s: got %+v, want a 200 result with body hello for job %s", id, res, enq.Job)
		}
		jobs = append(jobs, enq.Job)
	}
	if st := s.Stats(); st.Finished != 3 || st.Enqueued != 3 {
		t.Errorf("stats %+v, want 3 enqueued and 3 finished", st)
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g1", "job": jobs[0]})
	f := c.Read()
	if f.Type != "error" || f.ID != "g1" || f.Job != jobs[0] || f.Code != string(broker.CodeBadRequest) {
		t.Fatalf("get-result: got %+v, want a bad_request error for job %s", f, jobs[0])
	}
	if !strings.Contains(f.Message, "disabled") {
		t.Errorf("get-result error message %q, want it to say get-result is disabled", f.Message)
	}
}

// TestCallsAfterShutdown checks that a shut-down origin refuses work with
// ErrServerClosed and no longer accepts WebSocket connections.
func TestCallsAfterShutdown(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, true)
	s := b.origin(Config{})
	addr := s.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.ProxyFetch(ctx, FetchRequest{URL: b.target.URL + "/"}, ResultToClient, nil); err != nil {
		t.Fatalf("ProxyFetch before Shutdown: %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	if _, err := s.ProxyFetch(ctx, FetchRequest{URL: b.target.URL + "/"}, ResultToClient, nil); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ProxyFetch after Shutdown: got %v, want ErrServerClosed", err)
	}
	if err := s.Shutdown(ctx); !errors.Is(err, ErrServerClosed) {
		t.Errorf("second Shutdown: got %v, want ErrServerClosed", err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Start after Shutdown: got %v, want ErrServerClosed", err)
	}
	if conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil); err == nil {
		conn.Close()
		t.Errorf("WebSocket dial after Shutdown succeeded, want it refused")
	}
}

// bigBody is the size of the bench target's /big body: over
// broker.BulkResultBytes, so its result goes to the bulk lane.
const bigBody = 200_000

// TestSmallResultPassesAStuckBulkLane: large results go to the bulk lane,
// read through a consumer of its own, so a small result does not wait
// behind them: here the bulk lane is stuck in a continuation that does not
// return, and a small result still runs its continuation. (With one results
// consumer it waited for the large one's continuation.) Once released, the
// large results finish, and get-result reads them from the bulk lane.
func TestSmallResultPassesAStuckBulkLane(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, true)
	s := b.origin(Config{})
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the origin's shutdown: no continuation stays stuck
	held := make(chan string, 4)
	if err := s.Register("hold", func(ctx context.Context, res *broker.Result) error {
		held <- res.JobID
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	small := make(chan *broker.Result, 1)
	if err := s.Register("small", func(_ context.Context, res *broker.Result) error {
		small <- res
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var bigs []string
	for range 2 {
		job, err := s.ProxyFetch(ctx, FetchRequest{URL: b.target.URL + "/big"}, "hold", nil)
		if err != nil {
			t.Fatal(err)
		}
		bigs = append(bigs, job)
	}
	select {
	case <-held: // the bulk lane is stuck, the other large result behind it
	case <-ctx.Done():
		t.Fatal("no large result reached its continuation")
	}
	job, err := s.ProxyFetch(ctx, FetchRequest{URL: b.target.URL + "/"}, "small", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-small:
		if res.JobID != job || string(res.Body) != "hello" {
			t.Fatalf("small continuation got %+v", res)
		}
	case <-ctx.Done():
		t.Fatal("the small result waited behind the stuck bulk lane")
	}
	unblock()
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Stats().Finished == 3 }, "the large results finish once released")
	js := testutil.JetStream(t, b.srv)
	st, err := js.Stream(ctx, broker.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	c := testutil.DialWS(t, wsURL(s))
	for _, big := range bigs {
		if _, err := st.GetLastMsgForSubject(ctx, broker.Subjects{}.BulkResultOf("o1", big)); err != nil {
			t.Errorf("large result %s not on the bulk lane: %v", big, err)
		}
		c.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": big})
		if f := c.Read(); f.Type != "result" || f.Job != big || len(f.Body) != bigBody {
			t.Errorf("get-result %s: %s %s, %d bytes; want the large result", big, f.Type, f.Code, len(f.Body))
		}
	}
	if _, err := st.GetLastMsgForSubject(ctx, broker.Subjects{}.ResultOf("o1", job)); err != nil {
		t.Errorf("small result not on the small lane: %v", err)
	}
}

// TestResultOnPlainSubject: a result published on the plain results subject
// (pipeline.results.<origin>, PROTOCOL.md §2; a third-party executor) runs
// its continuation once, and get-result finds it afterwards, as it finds
// results stored on their job's own subject.
func TestResultOnPlainSubject(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, false)
	s := b.origin(Config{})
	ran := make(chan *broker.Result, 4)
	if err := s.Register("plain", func(_ context.Context, res *broker.Result) error {
		ran <- res
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	job, err := s.ProxyFetch(ctx, FetchRequest{URL: b.target.URL + "/"}, "plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(broker.Result{
		JobID: job, Origin: "o1", Status: 200, Body: []byte("third party"), Attempt: 1,
		Executor: "other", Continuation: broker.Continuation{Name: "plain"},
	})
	if err != nil {
		t.Fatal(err)
	}
	js := testutil.JetStream(t, b.srv)
	if _, err := js.Publish(ctx, broker.Subjects{}.Result("o1"), data); err != nil {
		t.Fatalf("publish on the plain subject: %v", err)
	}
	select {
	case res := <-ran:
		if res.JobID != job || string(res.Body) != "third party" {
			t.Fatalf("continuation got %+v", res)
		}
	case <-ctx.Done():
		t.Fatal("the continuation did not run")
	}
	c := testutil.DialWS(t, wsURL(s))
	c.SendJSON(map[string]any{"type": "get-result", "id": "g", "job": job})
	if f := c.Read(); f.Type != "result" || f.Job != job || f.Body != "third party" {
		t.Fatalf("get-result: %+v, want the plain-subject result", f)
	}
	// The copy on the job's subject came back through the consumer: it
	// must not run the continuation again.
	testutil.Eventually(t, 5*time.Second, func() bool { return s.Stats().Duplicates >= 1 }, "the copy was seen and suppressed")
	select {
	case res := <-ran:
		t.Fatalf("the continuation ran twice: %+v", res)
	default:
	}
}
