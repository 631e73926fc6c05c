package runtime

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Transports a call is served over (the via label of the runtime metrics).
const (
	viaNATS = "nats"
	viaHTTP = "http"
)

// Metric family names of the runtime.
const (
	// MetricRPCServedTotal counts calls served, labelled fn, via (nats,
	// http) and outcome (metrics.CallOutcomes).
	MetricRPCServedTotal = "pipeline_rpc_served_total"
	// MetricRPCServeSeconds is the runtime-side processing time histogram,
	// labelled fn and via.
	MetricRPCServeSeconds = "pipeline_rpc_serve_seconds"
)

// servedMetrics are the runtime's metrics, shared by every Service and
// HTTPServer of a process (metrics.Part):
//
//	pipeline_rpc_served_total{fn,via="nats|http",outcome}  calls served by the runtime
//	pipeline_rpc_serve_seconds{fn,via}                     runtime-side processing time (histogram)
//
// fn is a registered function's name, or "other". A nil *servedMetrics
// records nothing; its methods are safe for concurrent use.
type servedMetrics struct{ calls *metrics.CallCounters }

// newServedMetrics returns the process's runtime metrics from m (nil for a
// nil m), registering them on first use.
func newServedMetrics(m *metrics.Metrics) *servedMetrics {
	return metrics.Part(m, "runtime", func(reg prometheus.Registerer) *servedMetrics {
		c := metrics.NewCallCounters(prometheus.CounterOpts{
			Name: MetricRPCServedTotal,
			Help: "Function calls served by the runtime, by function, transport (nats or http) and outcome.",
		}, prometheus.HistogramOpts{
			Name: MetricRPCServeSeconds,
			Help: "Runtime-side processing time of a served call (function and reply).",
		})
		reg.MustRegister(c)
		return &servedMetrics{calls: c}
	})
}

// served records one call of fn served over via (nats or http), ended with
// status (0 for success, else its status), taking d. fn must be a
// registered name or "other", so that the label set stays bounded.
func (s *servedMetrics) served(fn, via string, status int, d time.Duration) {
	if s == nil {
		return
	}
	s.calls.Observe(fn, via, status, d)
}
