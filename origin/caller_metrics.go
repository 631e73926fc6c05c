package origin

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Outcome label values of pipeline_rpc_calls_total, derived from a call's
// status (CallError.Status).
const (
	callOK          = "ok"          // 2xx, or no error
	callBadInput    = "bad_input"   // 4xx: bad body, unknown function or via, too large
	callCancelled   = "cancelled"   // 499: the caller went away
	callUnavailable = "unavailable" // 502/503: no runtime reachable
	callTimeout     = "timeout"     // 504
	callError       = "error"       // anything else (500)
)

func callOutcomes() []string {
	return []string{callOK, callBadInput, callCancelled, callUnavailable, callTimeout, callError}
}

// callOutcomeIndex maps a status (0 meaning success) to an index in
// callOutcomes().
func callOutcomeIndex(status int) int {
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

// callerMetrics are the /call caller's metrics, shared by every Caller of a
// process (metrics.Part):
//
//	pipeline_rpc_calls_total{fn,via="direct|nats|http",outcome}  calls made by the caller
//	pipeline_rpc_seconds{fn,via}                                 caller-side call latency (histogram)
//
// fn and via are "other" when unknown, so that the label set stays bounded.
// The children of a (fn, via) cell are resolved on its first call and kept,
// so /metrics shows only the paths in use and later calls do not allocate.
// A nil *callerMetrics records nothing; its methods are safe for concurrent
// use.
type callerMetrics struct {
	calls   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	mu      sync.RWMutex
	cells   map[callCellKey]*callCell
}

type callCellKey struct{ fn, via string }

// callCell holds the resolved children of one (fn, via).
type callCell struct {
	calls   [6]prometheus.Counter // by outcome index
	seconds prometheus.Observer
}

// newCallerMetrics returns the process's caller metrics from m (nil for a
// nil m), registering them on first use.
func newCallerMetrics(m *metrics.Metrics) *callerMetrics {
	return metrics.Part(m, "origin-caller", func(reg prometheus.Registerer) *callerMetrics {
		c := &callerMetrics{
			calls: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metrics.Namespace, Subsystem: "rpc", Name: "calls_total",
				Help: "Function calls made by the caller (/call/<fn>), by function, delegation path and outcome.",
			}, []string{"fn", "via", "outcome"}),
			seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Namespace: metrics.Namespace, Subsystem: "rpc", Name: "seconds",
				Help:    "Caller-side latency of function calls, delegation included.",
				Buckets: metrics.LatencyBuckets(),
			}, []string{"fn", "via"}),
			cells: make(map[callCellKey]*callCell),
		}
		reg.MustRegister(c.calls, c.seconds)
		return c
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
	c := m.cell(fn, via)
	c.calls[callOutcomeIndex(status)].Inc()
	c.seconds.Observe(d.Seconds())
}

func (m *callerMetrics) cell(fn, via string) *callCell {
	k := callCellKey{fn, via}
	m.mu.RLock()
	c, ok := m.cells[k]
	m.mu.RUnlock()
	if ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.cells[k]; ok {
		return c
	}
	c = &callCell{seconds: m.seconds.WithLabelValues(fn, via)}
	for i, out := range callOutcomes() {
		c.calls[i] = m.calls.WithLabelValues(fn, via, out)
	}
	m.cells[k] = c
	return c
}
