package origin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Metric family names of the /call caller.
const (
	// MetricRPCCallsTotal counts calls made by the caller, labelled fn, via
	// (direct, nats, http) and outcome (metrics.CallOutcomes).
	MetricRPCCallsTotal = "pipeline_rpc_calls_total"
	// MetricRPCSeconds is the caller-side call latency histogram, labelled
	// fn and via.
	MetricRPCSeconds = "pipeline_rpc_seconds"
)

// callerMetrics are the /call caller's metrics, shared by every Caller of a
// process (metrics.Part):
//
//	pipeline_rpc_calls_total{fn,via="direct|nats|http",outcome}  calls made by the caller
//	pipeline_rpc_seconds{fn,via}                                 caller-side call latency (histogram)
//
// fn and via are "other" when unknown, so that the label set stays bounded.
// A nil *callerMetrics records nothing; its methods are safe for concurrent
// use.
type callerMetrics struct{ calls *metrics.CallCounters }

// newCallerMetrics returns the process's caller metrics from m (nil for a
// nil m), registering them on first use.
func newCallerMetrics(m *metrics.Metrics) *callerMetrics {
	return metrics.Part(m, "origin-caller", func(reg prometheus.Registerer) *callerMetrics {
		c := metrics.NewCallCounters(prometheus.CounterOpts{
			Name: MetricRPCCallsTotal,
			Help: "Function calls made by the caller (/call/<fn>), by function, delegation path and outcome.",
		}, prometheus.HistogramOpts{
			Name: MetricRPCSeconds,
			Help: "Caller-side latency of function calls, delegation included.",
		})
		reg.MustRegister(c)
		return &callerMetrics{calls: c}
	})
}

// fnLabel is fn's metrics label: fn when it is a known function (one of
// Functions, or a runtime built-in), else "other".
func (c *Caller) fnLabel(fn string) string {
	switch {
	case fn == "echo" || fn == "transform" || fn == "compute":
		return fn
	case c.fns != nil && c.fns.Has(fn):
		return fn
	}
	return "other"
}

// called records one call of fn through via, ended with status (0 or 2xx:
// success; else its CallError status), taking d.
func (m *callerMetrics) called(fn, via string, status int, d time.Duration) {
	if m == nil {
		return
	}
	switch via {
	case ViaDirect, ViaNATS, ViaHTTP:
	default:
		via = "other"
	}
	m.calls.Observe(fn, via, status, d)
}
