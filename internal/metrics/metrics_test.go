package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// value returns the value of the series name{labels} in m, and whether it
// exists (testutil.MetricValue).
func value(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	return testutil.MetricValue(t, m.Gatherer(), name, labels)
}

func want(t *testing.T, m *Metrics, name string, labels map[string]string, w float64) {
	t.Helper()
	testutil.WantMetric(t, m.Gatherer(), name, labels, w)
}

// testOutcomes registers an outcome counter named name in m through Part,
// as a role does with its own metrics.
func testOutcomes(m *Metrics, name string) *OutcomeCounters {
	return Part(m, name, func(reg prometheus.Registerer) *OutcomeCounters {
		oc := NewOutcomeCounters(prometheus.CounterOpts{Name: name, Help: "test outcomes"})
		reg.MustRegister(oc)
		return oc
	})
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.WatchQueue(nil, broker.Subjects{})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Metrics handler: status %d, want 404", rec.Code)
	}
}

// The recording methods run per job: they must not allocate.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New()
	oc := testOutcomes(m, "pipeline_test_outcomes_total")
	checks := map[string]func(){
		"outcome result":  func() { oc.Result() },
		"outcome error":   func() { oc.Error(broker.CodeFetchFailed) },
		"outcome unknown": func() { oc.Error(broker.Code("no_such_code")) },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// Every wire code has its own child from the start (exported at 0); a code
// outside the contract is counted as CodeOther.
func TestOutcomeCountersCoverEveryCode(t *testing.T) {
	m := New()
	const name = "pipeline_test_outcomes_total"
	oc := testOutcomes(m, name)
	want(t, m, name, map[string]string{LabelOutcome: OutcomeResult, LabelCode: ""}, 0)
	for _, c := range broker.Codes() {
		want(t, m, name, map[string]string{LabelOutcome: OutcomeError, LabelCode: string(c)}, 0)
	}
	want(t, m, name, map[string]string{LabelOutcome: OutcomeError, LabelCode: CodeOther}, 0)
	oc.Result()
	oc.Error(broker.CodeTimeout)
	oc.Error(broker.CodeTimeout)
	oc.Error(broker.Code("no_such_code"))
	want(t, m, name, map[string]string{LabelOutcome: OutcomeResult, LabelCode: ""}, 1)
	want(t, m, name, map[string]string{LabelOutcome: OutcomeError, LabelCode: "timeout"}, 2)
	want(t, m, name, map[string]string{LabelOutcome: OutcomeError, LabelCode: CodeOther}, 1)
	want(t, m, name, map[string]string{LabelOutcome: OutcomeError, LabelCode: "internal"}, 0)
}

func TestHandlerServesExpositionFormat(t *testing.T) {
	m := New()
	testOutcomes(m, "pipeline_test_outcomes_total").Result()
	Part(m, "hist", func(reg prometheus.Registerer) *prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pipeline_test_seconds", Help: "test", Buckets: LatencyBuckets()})
		reg.MustRegister(h)
		return &h
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, s := range []string{
		`pipeline_test_outcomes_total{code="",outcome="result"} 1`,
		"# TYPE pipeline_test_seconds histogram",
		"go_goroutines",
		"process_cpu_seconds_total",
	} {
		if !strings.Contains(string(body), s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
}

// startNATS runs an embedded JetStream server on a free port with the
// pipeline's streams provisioned.
func startNATS(t *testing.T, dir string, port int) (*broker.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := broker.NewServer(broker.ServerConfig{Port: port, MonitorPort: -2, StoreDir: dir, Logger: zerolog.Nop()})
	if err == nil {
		err = srv.Start(context.Background())
	}
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		_ = srv.Shutdown(context.Background())
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, js, broker.StreamsConfig{Storage: broker.MemoryStorage, FinishedTTL: -1}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return srv, nc, js
}

func TestQueueDepthReadsTheExecutorsConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, nc, js := startNATS(t, t.TempDir(), -1)
	defer func() { _ = srv.Shutdown(context.Background()) }()
	defer nc.Close()

	m := New()
	m.WatchQueue(js, broker.Subjects{})
	m.WatchQueue(js, broker.Subjects{}) // a second call must not register twice
	want(t, m, "pipeline_jobs_queue_depth", nil, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subj := broker.Subjects{}.Job("o1")
	// A keeper is in the stream but is not a job.
	if err := broker.KeepJobsBlock(ctx, js, broker.Subjects{}, time.Now(), time.Minute); err != nil {
		t.Fatalf("keeper: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := js.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// The reading is cached for a second.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := value(t, m, "pipeline_jobs_queue_depth", nil)
		if got == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue depth = %v, want 3 (4 messages, 1 of them a keeper)", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want(t, m, "pipeline_jobs_ack_pending", nil, 0)
}

func TestReadinessFollowsNATS(t *testing.T) {
	dir := t.TempDir()
	srv, nc, js := startNATS(t, dir, -1)
	defer nc.Close()
	r, err := NewReadiness(ReadinessConfig{
		Conns: []*nats.Conn{nc}, JS: js, Streams: []string{broker.JobsStream, broker.ResultsStream},
		CacheTTL: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(r)
	defer ts.Close()
	status := func() (int, string) {
		resp, err := http.Get(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := status(); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("ready: got %d %q, want 200 ready", code, body)
	}

	// Consumers are checked too.
	if _, err := broker.EnsureJobsConsumer(context.Background(), js, broker.Subjects{}, "o1"); err != nil {
		t.Fatal(err)
	}
	for cons, wantReady := range map[string]bool{broker.JobsConsumer("o1"): true, "nope": false} {
		rc, err := NewReadiness(ReadinessConfig{Conns: []*nats.Conn{nc}, JS: js,
			Consumers: []ConsumerRef{{Stream: broker.JobsStream, Consumer: cons}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Check(context.Background()); (err == nil) != wantReady {
			t.Errorf("consumer %s: Check = %v, want ready %v", cons, err, wantReady)
		}
	}

	// A missing stream makes the role not ready.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, broker.ResultsStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if code, body := status(); code != http.StatusServiceUnavailable || !strings.Contains(body, broker.ResultsStream) {
		t.Fatalf("stream gone: got %d %q, want 503 naming %s", code, body, broker.ResultsStream)
	}

	// NATS away: not ready at once, whatever the cache holds.
	_ = srv.Shutdown(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	err = r.Check(context.Background())
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("nats down: Check = %v, want ErrNotConnected", err)
	}
	if code, _ := status(); code != http.StatusServiceUnavailable {
		t.Fatalf("nats down: status %d, want 503", code)
	}
}

func TestNewReadinessValidates(t *testing.T) {
	if _, err := NewReadiness(ReadinessConfig{}); err == nil {
		t.Error("no connection: want an error")
	}
	if _, err := NewReadiness(ReadinessConfig{Conns: []*nats.Conn{nil}}); err == nil {
		t.Error("nil connection: want an error")
	}
	var r *Readiness
	if err := r.Check(context.Background()); err != nil {
		t.Errorf("nil Readiness: %v, want ready", err)
	}
}

func TestOpsServer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	m := New()
	testOutcomes(m, "pipeline_test_jobs_total").Result()
	s := NewOpsServer("127.0.0.1:0", NewOpsMux(m, nil), zerolog.Nop())
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("second Start: want an error")
	}
	for path, wantBody := range map[string]string{
		"/healthz": "ok\n",
		"/readyz":  "ready\n",
		"/metrics": `pipeline_test_jobs_total{code="",outcome="result"} 1`,
	} {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), wantBody) {
			t.Errorf("%s: got %d %q, want 200 containing %q", path, resp.StatusCode, b, wantBody)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestPartBuildsOncePerKey(t *testing.T) {
	m := New()
	builds := 0
	build := func(reg prometheus.Registerer) *prometheus.Counter {
		builds++
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "part_test_total", Help: "test"})
		reg.MustRegister(c)
		return &c
	}
	a := Part(m, "x", build)
	b := Part(m, "x", build)
	if a != b || builds != 1 {
		t.Fatalf("got %d builds (same part: %v), want 1 and the same part", builds, a == b)
	}
	var nilM *Metrics
	if p := Part(nilM, "x", build); p != nil {
		t.Fatalf("nil Metrics: got %v, want nil", p)
	}
}
