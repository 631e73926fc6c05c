package executor

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// harness is a real embedded JetStream server with the pipeline streams and
// a reader of every result.
type harness struct {
	t   *testing.T
	srv *broker.Server
	nc  *nats.Conn
	js  jetstream.JetStream

	mu      sync.Mutex
	results map[string][]*broker.Result // by job id
	arrived map[string]time.Time
}

func newHarness(t *testing.T, sc broker.StreamsConfig) *harness {
	t.Helper()
	srv, err := broker.NewServer(broker.ServerConfig{Port: -1, MonitorPort: -2, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	nc, err := broker.Connect(ctx, broker.ConnConfig{InProcess: srv, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sc.Storage = broker.MemoryStorage
	if err := broker.Provision(ctx, js, sc); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, nc: nc, js: js, results: map[string][]*broker.Result{}, arrived: map[string]time.Time{}}
	// One reader of all results (an ephemeral consumer on the work-queue
	// results stream would conflict with origin consumers; tests have none).
	cons, err := js.CreateOrUpdateConsumer(ctx, broker.ResultsStream, jetstream.ConsumerConfig{
		Durable: "test-results", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, err := broker.DecodeResult(m.Data())
		_ = m.Ack()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.results[r.JobID] = append(h.results[r.JobID], r)
		if _, ok := h.arrived[r.JobID]; !ok {
			h.arrived[r.JobID] = time.Now()
		}
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return h
}

// executor starts an executor on its own connection; it is shut down at
// cleanup.
func (h *harness) executor(cfg Config) *Executor {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := broker.Connect(ctx, broker.ConnConfig{InProcess: h.srv, Name: "executor"})
	if err != nil {
		h.t.Fatal(err)
	}
	if cfg.Fetcher.Policy == nil {
		cfg.Policy = netpolicy.Config{AllowPrivate: true}
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel)
	e, err := New(nc, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = e.Shutdown(sctx)
		nc.Close()
	})
	return e
}

// enqueue stores a job for origin and returns its id.
func (h *harness) enqueue(origin, id, url string, timeout time.Duration) {
	h.t.Helper()
	job := &broker.Job{ID: id, Origin: origin, URL: url, Method: http.MethodGet,
		TimeoutMS: timeout.Milliseconds(), ReceivedAt: time.Now().UnixNano()}
	data, _ := job.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.js.Publish(ctx, broker.Subjects{}.Job(origin), data, jetstream.WithMsgID(id)); err != nil {
		h.t.Fatalf("enqueue %s: %v", id, err)
	}
}

// result returns the results stored for job id so far.
func (h *harness) result(id string) ([]*broker.Result, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.results[id], h.arrived[id]
}

// waitResults polls until every job in ids has a result or d passes.
func (h *harness) waitResults(ids []string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		all := true
		for _, id := range ids {
			if r, _ := h.result(id); len(r) == 0 {
				all = false
				break
			}
		}
		if all {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// hangingHost answers nothing until the test ends (or the request is
// cancelled), and counts the requests in flight.
type hangingHost struct {
	*httptest.Server
	mu       sync.Mutex
	inflight int
	max      int
	release  chan struct{}
	once     sync.Once
}

func newHangingHost(t *testing.T) *hangingHost {
	h := &hangingHost{release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.inflight++
		if h.inflight > h.max {
			h.max = h.inflight
		}
		h.mu.Unlock()
		defer func() { h.mu.Lock(); h.inflight--; h.mu.Unlock() }()
		select {
		case <-h.release:
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { h.open(); h.Close() })
	return h
}

// open lets every waiting and later request through.
func (h *hangingHost) open() { h.once.Do(func() { close(h.release) }) }

func (h *hangingHost) peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

func fastHost(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}

// A host at its cap does not delay fetches to another host: the hanging
// host's jobs wait in the gate instead of holding executor slots.
func TestHangingHostDoesNotDelayOtherHosts(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	hang := newHangingHost(t)
	fast := fastHost(t)
	m := metrics.New()
	h.executor(Config{Concurrency: 8, PerHostConcurrency: 2, Metrics: m})

	for i := range 40 {
		h.enqueue("o1", fmt.Sprintf("hang-%d", i), hang.URL+"/", 30*time.Second)
	}
	var fastIDs []string
	for i := range 20 {
		id := fmt.Sprintf("fast-%d", i)
		fastIDs = append(fastIDs, id)
		h.enqueue("o1", id, fast.URL+"/", 5*time.Second)
	}
	// Loose bound: on an idle machine this takes milliseconds; without the
	// cap the 8 slots would hang for 30 s.
	if !h.waitResults(fastIDs, 10*time.Second) {
		t.Fatalf("fetches to a healthy host did not finish while another host hung (peak in flight to it %d)", hang.peak())
	}
	if p := hang.peak(); p > 2 {
		t.Errorf("hanging host saw %d fetches in flight, want at most the cap 2", p)
	}
	if v, _ := testutil.MetricValue(t, m.Gatherer(), MetricWaiting, map[string]string{LabelReason: WaitHostCap}); v < 1 {
		t.Errorf("%s{reason=host_cap} = %v, want jobs waiting", MetricWaiting, v)
	}
}

// Jobs that wait for their host longer than AckWait × MaxDeliver are neither
// redelivered nor dead-lettered, and each gets exactly one result.
func TestHostAtCapNeverDeadLetters(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{AckWait: 600 * time.Millisecond, MaxDeliver: 2})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(400 * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("late"))
	}))
	t.Cleanup(slow.Close)
	m := metrics.New()
	h.executor(Config{Concurrency: 16, PerHostConcurrency: 1, Metrics: m})
	// 8 jobs one at a time: the last waits about 3 s, five times AckWait
	// and more than AckWait × MaxDeliver.
	var ids []string
	for i := range 8 {
		id := fmt.Sprintf("slow-%d", i)
		ids = append(ids, id)
		h.enqueue("o1", id, slow.URL+"/", 5*time.Second)
	}
	if !h.waitResults(ids, 30*time.Second) {
		t.Fatal("not every job got a result")
	}
	time.Sleep(time.Second) // let any duplicate or dead-letter result arrive
	for _, id := range ids {
		rs, _ := h.result(id)
		if len(rs) != 1 {
			t.Errorf("job %s: %d results, want exactly 1", id, len(rs))
			continue
		}
		if rs[0].Error != nil || rs[0].Status != http.StatusOK {
			t.Errorf("job %s: result %+v (error %v), want status 200", id, rs[0], rs[0].Error)
		}
		if rs[0].Attempt != 1 {
			t.Errorf("job %s: delivered %d times, want once (waiting must not cost deliveries)", id, rs[0].Attempt)
		}
	}
	g := m.Gatherer()
	testutil.WantMetric(t, g, MetricDeadLettersTotal, nil, 0)
	testutil.WantMetric(t, g, MetricRedeliveriesTotal, nil, 0)
}

// Parked jobs of many origins on one busy host get exactly one result each,
// and the host slot goes to the origins in turn.
func TestParkedJobsOneResultEach(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	var mu sync.Mutex
	var order []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		order = append(order, r.URL.Query().Get("o"))
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(target.Close)
	// o1 stores 60 jobs before o2 stores 10, all to the same host.
	var ids []string
	for i := range 60 {
		id := fmt.Sprintf("o1-%d", i)
		ids = append(ids, id)
		h.enqueue("o1", id, target.URL+"/?o=o1", 5*time.Second)
	}
	for i := range 10 {
		id := fmt.Sprintf("o2-%d", i)
		ids = append(ids, id)
		h.enqueue("o2", id, target.URL+"/?o=o2", 5*time.Second)
	}
	h.executor(Config{Concurrency: 128, PerHostConcurrency: 1})
	if !h.waitResults(ids, 30*time.Second) {
		t.Fatal("not every job got a result")
	}
	for _, id := range ids {
		if rs, _ := h.result(id); len(rs) != 1 {
			t.Errorf("job %s: %d results, want exactly 1", id, len(rs))
		}
	}
	// Every job was pulled at once (128 slots) and the host serves one at
	// a time: o2's 10 jobs must not all come after o1's 60.
	mu.Lock()
	defer mu.Unlock()
	last := 0
	for i, o := range order {
		if o == "o2" {
			last = i
		}
	}
	if last >= 60 {
		t.Errorf("o2's last job was fetched as number %d of %d; with turns between origins it comes within the first 60 or so", last+1, len(order))
	}
}

// When an origin's places in the park are full, only that origin stops
// pulling: another origin's fetches go on, even those that wait for their
// own host (cap 1 here), and once the host answers every parked
// job gets exactly one result.
func TestFullParkBlocksOnlyItsOrigin(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	hang := newHangingHost(t)
	fast := fastHost(t)
	// 2 slots: 32 places per origin in the park; o1 sends more than that.
	h.executor(Config{Concurrency: 2, PerHostConcurrency: 1, DiscoverInterval: 100 * time.Millisecond})
	var o1 []string
	for i := range 60 {
		id := fmt.Sprintf("o1-hang-%d", i)
		o1 = append(o1, id)
		h.enqueue("o1", id, hang.URL+"/", 30*time.Second)
	}
	deadline := time.Now().Add(10 * time.Second)
	for hang.peak() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var o2 []string
	for i := range 10 {
		id := fmt.Sprintf("o2-fast-%d", i)
		o2 = append(o2, id)
		h.enqueue("o2", id, fast.URL+"/", 5*time.Second)
	}
	if !h.waitResults(o2, 10*time.Second) {
		t.Fatalf("o2 got %d of 10 results while o1 filled the park", h.done(o2))
	}
	hang.open()
	if !h.waitResults(o1, 30*time.Second) {
		t.Fatalf("o1 got %d of 60 results after the host answered", h.done(o1))
	}
	time.Sleep(200 * time.Millisecond)
	for _, id := range append(o1, o2...) {
		if rs, _ := h.result(id); len(rs) != 1 {
			t.Errorf("job %s: %d results, want exactly 1", id, len(rs))
		}
	}
}
