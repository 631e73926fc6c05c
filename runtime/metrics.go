package runtime

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Transports a call is served over (the via label of the runtime metrics).
const (
	viaNATS = "nats"
	viaHTTP = "http"
)

// Outcome label values of pipeline_rpc_served_total, derived from a call's
// status.
const (
	outcomeOK          = "ok"          // no error
	outcomeBadInput    = "bad_input"   // 4xx: bad body, unknown function, too large
	outcomeCancelled   = "cancelled"   // 499: the caller went away
	outcomeUnavailable = "unavailable" // 502/503
	outcomeTimeout     = "timeout"     // 504
	outcomeError       = "error"       // anything else (500)
)

func outcomes() []string {
	return []string{outcomeOK, outcomeBadInput, outcomeCancelled, outcomeUnavailable, outcomeTimeout, outcomeError}
}

// outcomeIndex maps a status (0 meaning success) to an index in outcomes().
func outcomeIndex(status int) int {
	switch {
	case status == 0 || status >= 200 && status < 300:
		return 0
	case status == 499:
		return 2
	case status >= 400 && status < 500:
		return 1
	case status == 502 || status == 503:
		return 3
	case status == 504:
		return 4
	}
	return 5
}

// servedMetrics are the runtime's metrics, shared by every Service and
// HTTPServer of a process (metrics.Part):
//
//	pipeline_rpc_served_total{fn,via="nats|http",outcome}  calls served by the runtime
//	pipeline_rpc_serve_seconds{fn,via}                     runtime-side processing time (histogram)
//
// fn is a registered function's name, or "other". The children of a
// (fn, via) cell are resolved on its first call and kept, so /metrics shows
// only the paths in use and later calls do not allocate. A nil
// *servedMetrics records nothing; its methods are safe for concurrent use.
type servedMetrics struct {
	calls   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	mu      sync.RWMutex
	cells   map[cellKey]*cell
}

type cellKey struct{ fn, via string }

// cell holds the resolved children of one (fn, via).
type cell struct {
	calls   [6]prometheus.Counter // by outcome index
	seconds prometheus.Observer
}

// newServedMetrics returns the process's runtime metrics from m (nil for a
// nil m), registering them on first use.
func newServedMetrics(m *metrics.Metrics) *servedMetrics {
	return metrics.Part(m, "runtime", func(reg prometheus.Registerer) *servedMetrics {
		s := &servedMetrics{
			calls: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metrics.Namespace, Subsystem: "rpc", Name: "served_total",
				Help: "Function calls served by the runtime, by function, transport (nats or http) and outcome.",
			}, []string{"fn", "via", "outcome"}),
			seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Namespace: metrics.Namespace, Subsystem: "rpc", Name: "serve_seconds",
				Help:    "Runtime-side processing time of a served call (function and reply).",
				Buckets: metrics.LatencyBuckets(),
			}, []string{"fn", "via"}),
		}
		s.cells = make(map[cellKey]*cell)
		reg.MustRegister(s.calls, s.seconds)
		return s
	})
}

// served records one call of fn served over via (nats or http), ended with
// status (0 for success, else its status), taking d. fn must be a
// registered name or "other", so that the label set stays bounded.
func (s *servedMetrics) served(fn, via string, status int, d time.Duration) {
	if s == nil {
		return
	}
	c := s.cell(fn, via)
	c.calls[outcomeIndex(status)].Inc()
	c.seconds.Observe(d.Seconds())
}

func (s *servedMetrics) cell(fn, via string) *cell {
	k := cellKey{fn, via}
	s.mu.RLock()
	c, ok := s.cells[k]
	s.mu.RUnlock()
	if ok {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cells[k]; ok {
		return c
	}
	c = &cell{seconds: s.seconds.WithLabelValues(fn, via)}
	for i, out := range outcomes() {
		c.calls[i] = s.calls.WithLabelValues(fn, via, out)
	}
	s.cells[k] = c
	return c
}
