package origin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestNilMetricsRecordNothing(t *testing.T) {
	o := MetricsOf(nil)
	if o != nil {
		t.Fatalf("nil metrics gave a non-nil part %v", o)
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
	if n := o.ExecutorsSeen(); n != 0 {
		t.Errorf("ExecutorsSeen = %d, want 0", n)
	}
}

func TestMetrics(t *testing.T) {
	m := metrics.New()
	o := MetricsOf(m)
	if MetricsOf(m) != o {
		t.Fatal("MetricsOf returned a second instance")
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

	g := m.Gatherer()
	testutil.WantMetric(t, g, "pipeline_origin_fetches_total", map[string]string{"outcome": "result", "code": ""}, 2)
	testutil.WantMetric(t, g, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "invalid_url"}, 1)
	testutil.WantMetric(t, g, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "other"}, 1)
	testutil.WantMetric(t, g, "pipeline_origin_fetches_total", map[string]string{"outcome": "error", "code": "timeout"}, 0)
	testutil.WantMetric(t, g, "pipeline_origin_jobs_enqueued_total", nil, 1)
	testutil.WantMetric(t, g, "pipeline_origin_duplicates_suppressed_total", nil, 1)
	testutil.WantMetric(t, g, "pipeline_origin_ws_connections", nil, 1)
	testutil.WantMetric(t, g, "pipeline_origin_inflight_fetches", nil, 5)
	testutil.WantMetric(t, g, "pipeline_origin_executors_seen", nil, 2)
	for _, p := range []string{"enqueue", "queue", "fetch", "total"} {
		testutil.WantMetric(t, g, "pipeline_phase_seconds", map[string]string{"phase": p}, 1)
	}
	untrack()
	testutil.WantMetric(t, g, "pipeline_origin_inflight_fetches", nil, 2)
	// An executor role that never ran registers nothing.
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "pipeline_executor_") {
			t.Errorf("%s registered without an executor", mf.GetName())
		}
	}
}

// The exported names are the names in /metrics (the dashboard reads them).
func TestMetricNamesAreExposed(t *testing.T) {
	m := metrics.New()
	MetricsOf(m).Result()
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
	} {
		if !strings.Contains(string(body), s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
	for _, name := range []string{
		MetricFetchesTotal, MetricJobsEnqueuedTotal, MetricDuplicatesSuppressedTotal,
		MetricWSConnections, MetricInflightFetches, MetricExecutorsSeen, MetricPhaseSeconds,
	} {
		if !strings.Contains(string(body), "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks the family %s", name)
		}
	}
	if !strings.Contains(string(body), LabelPhase+`="`+PhaseQueue+`"`) {
		t.Errorf("/metrics lacks %s=%q", LabelPhase, PhaseQueue)
	}
}

// The recording methods run per fetch: they must not allocate.
func TestRecordingDoesNotAllocate(t *testing.T) {
	o := MetricsOf(metrics.New())
	checks := map[string]func(){
		"origin result":  func() { o.Result() },
		"origin error":   func() { o.Error(broker.CodeFetchFailed) },
		"origin phases":  func() { o.Phases(time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond) },
		"executor seen":  func() { o.ExecutorSeen("host-abc") },
		"origin enqueue": func() { o.Enqueued() },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

func BenchmarkOriginFinishedFetch(b *testing.B) {
	o := MetricsOf(metrics.New())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Result()
			o.Phases(time.Millisecond, 100*time.Microsecond, 5*time.Millisecond, 6*time.Millisecond)
			o.ExecutorSeen("host-abc")
		}
	})
}
