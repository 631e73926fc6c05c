package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome label values of the function-call counters (pipeline_rpc_*), from
// an HTTP-like status: 0 or 2xx is CallOK.
const (
	CallOK          = "ok"          // 2xx, or no error
	CallBadInput    = "bad_input"   // 4xx: bad body, unknown function, too large
	CallCancelled   = "cancelled"   // 499: the caller went away
	CallUnavailable = "unavailable" // 502/503: no runtime reachable
	CallTimeout     = "timeout"     // 504
	CallError       = "error"       // anything else (500)
)

// CallOutcomes lists the call outcome label values, in a fixed order.
func CallOutcomes() []string {
	return []string{CallOK, CallBadInput, CallCancelled, CallUnavailable, CallTimeout, CallError}
}

// callOutcomeIndex maps a status (0 meaning success) to an index in
// CallOutcomes.
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

// CallCounters count function calls by {fn, via, outcome} and time them by
// {fn, via}: the caller's and the runtime's pipeline_rpc_* metrics. The
// children of a (fn, via) cell are resolved on its first call and kept, so
// /metrics shows only the paths in use and later calls do not allocate;
// callers keep fn and via to a bounded set. Register it as a collector. A
// nil *CallCounters records nothing. Safe for concurrent use.
type CallCounters struct {
	calls   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	mu      sync.RWMutex
	cells   map[[2]string]*callCell
}

// callCell holds the resolved children of one (fn, via).
type callCell struct {
	calls   [6]prometheus.Counter // by callOutcomeIndex
	seconds prometheus.Observer
}

// NewCallCounters returns counters named by counter (labels fn, via,
// outcome) and a histogram named by seconds (labels fn, via; its buckets
// default to LatencyBuckets).
func NewCallCounters(counter prometheus.CounterOpts, seconds prometheus.HistogramOpts) *CallCounters {
	if seconds.Buckets == nil {
		seconds.Buckets = LatencyBuckets()
	}
	return &CallCounters{
		calls:   prometheus.NewCounterVec(counter, []string{"fn", "via", "outcome"}),
		seconds: prometheus.NewHistogramVec(seconds, []string{"fn", "via"}),
		cells:   make(map[[2]string]*callCell),
	}
}

// Describe implements prometheus.Collector.
func (c *CallCounters) Describe(ch chan<- *prometheus.Desc) {
	c.calls.Describe(ch)
	c.seconds.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *CallCounters) Collect(ch chan<- prometheus.Metric) {
	c.calls.Collect(ch)
	c.seconds.Collect(ch)
}

// Observe records one call of fn through via that ended with status (0 or
// 2xx: success) and took d.
func (c *CallCounters) Observe(fn, via string, status int, d time.Duration) {
	if c == nil {
		return
	}
	cell := c.cell(fn, via)
	cell.calls[callOutcomeIndex(status)].Inc()
	cell.seconds.Observe(d.Seconds())
}

func (c *CallCounters) cell(fn, via string) *callCell {
	k := [2]string{fn, via}
	c.mu.RLock()
	cell, ok := c.cells[k]
	c.mu.RUnlock()
	if ok {
		return cell
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cell, ok := c.cells[k]; ok {
		return cell
	}
	cell = &callCell{seconds: c.seconds.WithLabelValues(fn, via)}
	for i, out := range CallOutcomes() {
		cell.calls[i] = c.calls.WithLabelValues(fn, via, out)
	}
	c.cells[k] = cell
	return cell
}
