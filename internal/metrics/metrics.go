package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every pipeline metric name.
const Namespace = "pipeline"

// Metrics is the set of metrics of one process, registered in its own
// registry. Create it with New; the zero value is not usable, but a nil
// *Metrics is: every accessor then returns nil, whose methods do nothing.
// It is safe for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	started time.Time

	queueOnce sync.Once

	partsMu sync.Mutex
	parts   map[string]any // Part: key → the value its build made
}

// New returns a Metrics with a fresh registry holding the Go runtime and
// process collectors. Role metrics are added by the first call of Part for
// that role (origin.MetricsOf, executor.MetricsOf, the runtime's and the
// /call caller's own).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Metrics{reg: reg, started: time.Now()}
}

// Registry is the process's registry, for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Gatherer reads every registered metric (the dashboard uses it).
func (m *Metrics) Gatherer() prometheus.Gatherer {
	if m == nil {
		return prometheus.Gatherers{}
	}
	return m.reg
}

// Started is when New was called (the process's metrics epoch).
func (m *Metrics) Started() time.Time {
	if m == nil {
		return time.Time{}
	}
	return m.started
}

// Handler serves the registry in the Prometheus exposition formats
// (GET /metrics). A collector that fails is reported in the response and
// the other metrics are still served. With a nil Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.reg, // promhttp_metric_handler_* about the scrapes themselves
		EnableOpenMetrics: true,
	})
}

// Part returns the metrics part registered under key, building it with build
// (which registers its collectors in reg) on first use; later calls with the
// same key return the same part, so every role instance in a process shares
// it. It returns nil for a nil Metrics. Roles use it to own their metrics:
// origin/metrics.go, executor/metrics.go and runtime/metrics.go each declare
// a part and its recording methods. It panics if key was first registered
// with a different type, or if build registers a metric name twice
// (programming errors). Safe for concurrent use.
func Part[T any](m *Metrics, key string, build func(reg prometheus.Registerer) *T) *T {
	if m == nil {
		return nil
	}
	m.partsMu.Lock()
	defer m.partsMu.Unlock()
	if p, ok := m.parts[key]; ok {
		return p.(*T)
	}
	if m.parts == nil {
		m.parts = make(map[string]any)
	}
	p := build(m.reg)
	m.parts[key] = p
	return p
}

// LatencyBuckets returns the histogram bucket bounds, in seconds, every
// pipeline latency histogram uses: 50 µs to 60 s, each about 1.5× the
// previous, fine enough for the dashboard's p50/p99.
func LatencyBuckets() []float64 { return prometheus.ExponentialBucketsRange(50e-6, 60, 36) }
