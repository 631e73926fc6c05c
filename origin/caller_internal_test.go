package origin

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"error":"bad \"x\""}`, `bad "x"`},
		{`{"other":[1,2],"error":"e"}`, "e"},
		{`not json`, "fallback"},
		{`{"error":42}`, "fallback"},
		{``, "fallback"},
	} {
		if got := errorMessage([]byte(tc.body), "fallback"); got != tc.want {
			t.Errorf("errorMessage(%q): got %q, want %q", tc.body, got, tc.want)
		}
	}
}

// metricValue reads one counter or histogram (its sample count) from g.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if labelOf(m, k) != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
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

func TestCallerMetrics(t *testing.T) {
	m := metrics.New()
	r := newCallerMetrics(m)
	if newCallerMetrics(m) != r {
		t.Fatal("a second caller in the process got its own metrics")
	}
	cases := []struct {
		fn, via string
		status  int
		outcome string
	}{
		{"echo", "nats", 0, metrics.CallOK},
		{"transform", "http", 200, metrics.CallOK},
		{"compute", "direct", 400, metrics.CallBadInput},
		{"echo", "nats", 413, metrics.CallBadInput},
		{"echo", "nats", 499, metrics.CallCancelled},
		{"echo", "http", 502, metrics.CallUnavailable},
		{"echo", "http", 504, metrics.CallTimeout},
		{"echo", "http", 500, metrics.CallError},
		{"other", "pigeon", 0, metrics.CallOK},
	}
	for _, c := range cases {
		r.called(c.fn, c.via, c.status, time.Millisecond)
	}
	want := func(name string, labels map[string]string, w float64) {
		t.Helper()
		got, ok := metricValue(t, m.Gatherer(), name, labels)
		if !ok {
			t.Errorf("%s%v: missing", name, labels)
		} else if got != w {
			t.Errorf("%s%v = %v, want %v", name, labels, got, w)
		}
	}
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "nats", "outcome": "ok"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "nats", "outcome": "bad_input"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "compute", "via": "direct", "outcome": "bad_input"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "nats", "outcome": "cancelled"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "http", "outcome": "unavailable"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "http", "outcome": "timeout"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "echo", "via": "http", "outcome": "error"}, 1)
	want("pipeline_rpc_calls_total", map[string]string{"fn": "other", "via": "other", "outcome": "ok"}, 1)
	want("pipeline_rpc_seconds", map[string]string{"fn": "echo", "via": "http"}, 3)

	// An unknown function name is counted as "other" (bounded labels).
	c := &Caller{}
	if got := c.fnLabel("no-such-fn"); got != "other" {
		t.Errorf("fnLabel of an unknown function: got %q, want other", got)
	}

	// Recording runs per call: it must not allocate.
	if n := testing.AllocsPerRun(200, func() { r.called("transform", "nats", 0, time.Millisecond) }); n != 0 {
		t.Errorf("rpc call: %v allocations per call, want 0", n)
	}
	// A nil part records nothing and does not panic.
	var none *callerMetrics
	none.called("echo", "nats", 0, time.Millisecond)
	if newCallerMetrics(nil) != nil {
		t.Error("nil Metrics gave a non-nil part")
	}
}
