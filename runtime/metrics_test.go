package runtime

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

func TestServedMetrics(t *testing.T) {
	m := metrics.New()
	s := newServedMetrics(m)
	if newServedMetrics(m) != s {
		t.Fatal("a second runtime in the process got its own metrics")
	}
	s.served("compute", "nats", 0, time.Millisecond)
	s.served("compute", "http", 400, time.Millisecond)
	want := func(name string, labels map[string]string, w float64) {
		t.Helper()
		mfs, err := m.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, mm := range mf.GetMetric() {
				if !hasLabels(mm, labels) {
					continue
				}
				got := mm.GetCounter().GetValue()
				if h := mm.GetHistogram(); h != nil {
					got = float64(h.GetSampleCount())
				}
				if got != w {
					t.Errorf("%s%v = %v, want %v", name, labels, got, w)
				}
				return
			}
		}
		t.Errorf("%s%v: missing", name, labels)
	}
	want("pipeline_rpc_served_total", map[string]string{"fn": "compute", "via": "nats", "outcome": "ok"}, 1)
	want("pipeline_rpc_served_total", map[string]string{"fn": "compute", "via": "http", "outcome": "bad_input"}, 1)
	want("pipeline_rpc_serve_seconds", map[string]string{"fn": "compute", "via": "http"}, 1)

	// Recording runs per call: it must not allocate.
	if n := testing.AllocsPerRun(200, func() { s.served("compute", "http", 400, time.Millisecond) }); n != 0 {
		t.Errorf("rpc served: %v allocations per call, want 0", n)
	}
	// A nil part records nothing and does not panic.
	var none *servedMetrics
	none.served("echo", "nats", 400, time.Millisecond)
	if newServedMetrics(nil) != nil {
		t.Error("nil Metrics gave a non-nil part")
	}
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
