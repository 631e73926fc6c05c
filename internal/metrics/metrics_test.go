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
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/broker"
)

// value returns the value of the series name{labels} (counter, gauge, or
// a histogram's sample count), and whether it exists.
func value(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			for k, v := range labels {
				if labelOf(s, k) != v {
					continue next
				}
			}
			switch {
			case s.Counter != nil:
				return s.GetCounter().GetValue(), true
			case s.Gauge != nil:
				return s.GetGauge().GetValue(), true
			case s.Histogram != nil:
				return float64(s.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func want(t *testing.T, m *Metrics, name string, labels map[string]string, w float64) {
	t.Helper()
	got, ok := value(t, m, name, labels)
	if !ok {
		t.Errorf("%s%v: missing", name, labels)
		return
	}
	if got != w {
		t.Errorf("%s%v = %v, want %v", name, labels, got, w)
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	o, e := m.Origin(), m.Executor()
	if o != nil || e != nil {
		t.Fatalf("nil Metrics gave non-nil parts %v %v", o, e)
	}
	// None of these may panic.
	o.Result()
	o.Error(broker.CodeTimeout)
	o.Enqueued()
	o.Duplicate()
	o.ConnOpened()
	o.ConnClosed()
	o.Phases(1, 2, 3, 4)
	o.ExecutorSeen("x")
	o.TrackInFlight(func() int { return 1 })()
	e.Begin()
	e.End()
	e.Redelivered()
	e.Retry()
	e.Fetched(time.Millisecond)
	e.Result()
	e.Error(broker.CodeFetchFailed)
	e.DeadLetter()
	e.PublishFailed()
	m.WatchQueue(nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Metrics handler: status %d, want 404", rec.Code)
	}
}

func TestOriginMetrics(t *testing.T) {
	m := New()
	o := m.Origin()
	if m.Origin() != o {
		t.Fatal("Origin() returned a second instance")
	}
	o.Result()
	o.Result()
	o.Error(broker.CodeInvalidURL)
	o.Error(broker.Code("no_such_code"))
	o.Enqueued()
	o.Duplicate()
	o.ConnOpened()
	o.ConnOpened()
	o.ConnClosed()
	o.Phases(time.Millisecond, 2*time.Millisecond, 3*time.Millisecond, 6*time.Millisecond)
	n := 3
	untrack := o.TrackInFlight(func() int { return n })
	o.TrackInFlight(func() int { return 2 })
	o.ExecutorSeen("a")
	o.ExecutorSeen("a")
	o.ExecutorSeen("b")

	want(t, m, "pipeline_origin_fetches_total", map[string]string{"outcome": "result", "code": ""}, 2)
	want(t, m, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "invalid_url"}, 1)
	want(t, m, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "other"}, 1)
	want(t, m, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "timeout"}, 0)
	want(t, m, "pipeline_origin_jobs_enqueued_total", nil, 1)
	want(t, m, "pipeline_origin_duplicates_suppressed_total", nil, 1)
	want(t, m, "pipeline_origin_ws_connections", nil, 1)
	want(t, m, "pipeline_origin_inflight_fetches", nil, 5)
	want(t, m, "pipeline_origin_executors_seen", nil, 2)
	for _, p := range Phases() {
		want(t, m, "pipeline_phase_seconds", map[string]string{"phase": p}, 1)
	}
	untrack()
	want(t, m, "pipeline_origin_inflight_fetches", nil, 2)
	// An executor role that never ran registers nothing.
	if _, ok := value(t, m, "pipeline_executor_jobs_total", map[string]string{"outcome": "result"}); ok {
		t.Error("executor metrics registered without an executor")
	}
}

func TestExecutorAndRPCMetrics(t *testing.T) {
	m := New()
	e := m.Executor()
	e.Begin()
	e.Begin()
	e.End()
	e.Redelivered()
	e.Retry()
	e.Fetched(10 * time.Millisecond)
	e.Result()
	e.Error(broker.CodeBlockedDestination)
	e.DeadLetter()
	e.PublishFailed()
	want(t, m, "pipeline_executor_inflight", nil, 1)
	want(t, m, "pipeline_executor_redeliveries_total", nil, 1)
	want(t, m, "pipeline_executor_fetch_retries_total", nil, 1)
	want(t, m, "pipeline_executor_fetch_seconds", nil, 1)
	want(t, m, "pipeline_executor_jobs_total", map[string]string{"outcome": "result"}, 1)
	want(t, m, "pipeline_executor_jobs_total", map[string]string{"outcome": "error", "code": "blocked_destination"}, 1)
	want(t, m, "pipeline_executor_dead_letters_total", nil, 1)
	want(t, m, "pipeline_executor_publish_failures_total", nil, 1)
}

// The recording methods run per job: they must not allocate.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New()
	o, e := m.Origin(), m.Executor()
	checks := map[string]func(){
		"origin result":  func() { o.Result() },
		"origin error":   func() { o.Error(broker.CodeFetchFailed) },
		"origin phases":  func() { o.Phases(time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond) },
		"executor seen":  func() { o.ExecutorSeen("host-abc") },
		"executor job":   func() { e.Begin(); e.Fetched(time.Millisecond); e.Error(broker.CodeTimeout); e.End() },
		"origin enqueue": func() { o.Enqueued() },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

func TestHandlerServesExpositionFormat(t *testing.T) {
	m := New()
	m.Origin().Result()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, s := range []string{
		`pipeline_origin_fetches_total{code="",outcome="result"} 1`,
		"# TYPE pipeline_phase_seconds histogram",
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
	srv, err := broker.StartServer(broker.ServerConfig{Port: port, MonitorPort: -2, StoreDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		srv.Shutdown()
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, js, broker.StreamsConfig{Memory: true, FinishedTTL: -1}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return srv, nc, js
}

func TestQueueDepthReadsTheExecutorsConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, nc, js := startNATS(t, t.TempDir(), -1)
	defer srv.Shutdown()
	defer nc.Close()

	m := New()
	m.WatchQueue(js)
	m.WatchQueue(js) // a second call must not register twice
	want(t, m, "pipeline_jobs_queue_depth", nil, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subj := broker.Subjects{}.Job("o1")
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
			t.Fatalf("queue depth = %v, want 3", got)
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
	for cons, wantReady := range map[string]bool{broker.ExecutorsConsumer: true, "nope": false} {
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
	srv.Shutdown()
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
	m.Executor().Result()
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
		"/metrics": `pipeline_executor_jobs_total{code="",outcome="result"} 1`,
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

func BenchmarkOriginFinishedFetch(b *testing.B) {
	o := New().Origin()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Result()
			o.Phases(time.Millisecond, 100*time.Microsecond, 5*time.Millisecond, 6*time.Millisecond)
			o.ExecutorSeen("host-abc")
		}
	})
}

func BenchmarkExecutorJob(b *testing.B) {
	e := New().Executor()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Begin()
			e.Fetched(5 * time.Millisecond)
			e.Result()
			e.End()
		}
	})
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
