package executor

import (
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestNilMetricsRecordNothing(t *testing.T) {
	e := MetricsOf(nil)
	if e != nil {
		t.Fatalf("nil metrics gave a non-nil part %v", e)
	}
	// None of these may panic.
	e.Begin()
	e.End()
	e.Redelivered()
	e.Retry()
	e.Fetched(time.Millisecond)
	e.Result()
	e.Error(broker.CodeFetchFailed)
	e.DeadLetter()
	e.PublishFailed()
	e.Waiting(WaitHostCap, 1)
	e.Backlog(map[string]uint64{"o1": 1})
}

func TestMetrics(t *testing.T) {
	m := metrics.New()
	e := MetricsOf(m)
	if MetricsOf(m) != e {
		t.Fatal("MetricsOf returned a second instance; executors of a process share one")
	}
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
	e.Trimmed(3)
	e.Trimmed(0)
	e.Waiting(WaitHostCap, 2)
	e.Waiting(WaitShare, 1)
	e.Waiting(WaitHostCap, -1)
	e.Backlog(map[string]uint64{"o1": 5, "o2": 3})
	e.Backlog(map[string]uint64{"o1": 4}) // o2 has no jobs left: its series goes
	g := m.Gatherer()
	testutil.WantMetric(t, g, MetricWaiting, map[string]string{LabelReason: WaitHostCap}, 1)
	testutil.WantMetric(t, g, MetricWaiting, map[string]string{LabelReason: WaitShare}, 1)
	testutil.WantMetric(t, g, MetricOriginBacklog, map[string]string{LabelOrigin: "o1"}, 4)
	if _, ok := testutil.MetricValue(t, g, MetricOriginBacklog, map[string]string{LabelOrigin: "o2"}); ok {
		t.Error("backlog of an origin without jobs is still reported")
	}
	testutil.WantMetric(t, g, "pipeline_executor_inflight", nil, 1)
	testutil.WantMetric(t, g, "pipeline_executor_redeliveries_total", nil, 1)
	testutil.WantMetric(t, g, "pipeline_executor_fetch_retries_total", nil, 1)
	testutil.WantMetric(t, g, "pipeline_executor_fetch_seconds", nil, 1)
	testutil.WantMetric(t, g, "pipeline_executor_jobs_total", map[string]string{"outcome": "result"}, 1)
	testutil.WantMetric(t, g, "pipeline_executor_jobs_total", map[string]string{"outcome": "error", "code": "blocked_destination"}, 1)
	testutil.WantMetric(t, g, "pipeline_executor_dead_letters_total", nil, 1)
	testutil.WantMetric(t, g, "pipeline_executor_publish_failures_total", nil, 1)
	testutil.WantMetric(t, g, MetricResultsTrimmedTotal, nil, 3)

	// The exported names are the names gathered (the dashboard reads them).
	for _, name := range []string{
		MetricJobsTotal, MetricInflight, MetricRedeliveriesTotal, MetricFetchRetriesTotal,
		MetricDeadLettersTotal, MetricPublishFailuresTotal, MetricFetchSeconds, MetricWaiting, MetricOriginBacklog,
	} {
		if _, ok := testutil.MetricValue(t, g, name, nil); !ok {
			t.Errorf("%s: not gathered", name)
		}
	}
}

// The recording methods run per job: they must not allocate.
func TestRecordingDoesNotAllocate(t *testing.T) {
	e := MetricsOf(metrics.New())
	job := func() { e.Begin(); e.Fetched(time.Millisecond); e.Error(broker.CodeTimeout); e.End() }
	if n := testing.AllocsPerRun(200, job); n != 0 {
		t.Errorf("executor job: %v allocations per call, want 0", n)
	}
}

func BenchmarkExecutorJob(b *testing.B) {
	e := MetricsOf(metrics.New())
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
