package executor

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Politeness metric family names (no host labels: hosts are unbounded; the
// busiest hosts are in TopHosts instead).
const (
	// MetricHeldTotal counts jobs held for their host, labelled LabelReason:
	// WaitRate and WaitRetryAfter count waits (one per hold of at least a
	// millisecond), WaitCircuit counts jobs refused by an open circuit.
	MetricHeldTotal = "pipeline_executor_held_total"
	// MetricCircuitsOpen is the number of hosts whose circuit is open or
	// half-open in this process's executors.
	MetricCircuitsOpen = "pipeline_executor_circuits_open"
	// MetricRateTokens is the number of leased rate slots (tokens) this
	// process holds and has not handed to a job yet, all hosts together.
	MetricRateTokens = "pipeline_executor_rate_tokens"
	// MetricRateTokensLeasedTotal counts rate slots leased from the shared
	// schedules, all hosts together.
	MetricRateTokensLeasedTotal = "pipeline_executor_rate_tokens_leased_total"
	// MetricRateLeasesTotal counts leases (KV compare-and-set writes).
	MetricRateLeasesTotal = "pipeline_executor_rate_leases_total"
)

// maxHostStats bounds the hosts TopHosts keeps counters for.
const maxHostStats = 1000

// HostStats are a destination host's politeness counters in this process
// (TopHosts).
type HostStats struct {
	Host string `json:"host"`
	// RateWaits counts jobs that waited for the host's rate.
	RateWaits uint64 `json:"rate_waits"`
	// RetryAfters counts 429 and 503+Retry-After answers.
	RetryAfters uint64 `json:"retry_afters"`
	// CircuitRefused counts jobs ended at once by the open circuit.
	CircuitRefused uint64 `json:"circuit_refused"`
	// CircuitOpens counts the times the circuit opened.
	CircuitOpens uint64 `json:"circuit_opens"`
	// Circuit is "open" or "closed" (as last changed in this process).
	Circuit string `json:"circuit"`
}

func (h *HostStats) total() uint64 {
	return h.RateWaits + h.RetryAfters + h.CircuitRefused + h.CircuitOpens
}

type hostEventKind int

const (
	hostRateWait hostEventKind = iota
	hostRetryAfter
	hostCircuitRefused
)

// politeMetrics are the politeness parts of Metrics.
type politeMetrics struct {
	waitRate, waitRetryAfter              prometheus.Gauge
	heldRate, heldRetryAfter, heldCircuit prometheus.Counter
	circuitsOpen, tokens                  prometheus.Gauge
	tokensLeased, leases                  prometheus.Counter

	mu    sync.Mutex
	hosts map[string]*HostStats
}

func newPoliteMetrics(reg prometheus.Registerer, waiting *prometheus.GaugeVec) *politeMetrics {
	held := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricHeldTotal,
		Help: "Jobs held for their destination host without an executor slot, by reason: rate (waited for the host's cluster-wide rate), retry_after (waited out a 429/503 Retry-After), circuit (ended at once with circuit_open).",
	}, []string{LabelReason})
	p := &politeMetrics{
		waitRate:       waiting.WithLabelValues(WaitRate),
		waitRetryAfter: waiting.WithLabelValues(WaitRetryAfter),
		heldRate:       held.WithLabelValues(WaitRate),
		heldRetryAfter: held.WithLabelValues(WaitRetryAfter),
		heldCircuit:    held.WithLabelValues(WaitCircuit),
		circuitsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricCircuitsOpen,
			Help: "Destination hosts whose circuit breaker is open (or half-open) in this process.",
		}),
		tokens: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricRateTokens,
			Help: "Rate slots leased from the shared per-host schedules and not yet given to a job, all hosts together.",
		}),
		tokensLeased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricRateTokensLeasedTotal,
			Help: "Rate slots leased from the shared per-host schedules, all hosts together.",
		}),
		leases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricRateLeasesTotal,
			Help: "Leases of rate slots (one KV compare-and-set write each).",
		}),
		hosts: map[string]*HostStats{},
	}
	reg.MustRegister(held, p.circuitsOpen, p.tokens, p.tokensLeased, p.leases)
	return p
}

func (p *politeMetrics) waiting(reason string, delta int) {
	switch reason {
	case WaitRate:
		p.waitRate.Add(float64(delta))
	case WaitRetryAfter:
		p.waitRetryAfter.Add(float64(delta))
	}
}

// Held counts a job held (or, for WaitCircuit, refused) for reason.
func (e *Metrics) Held(reason string) {
	if e == nil {
		return
	}
	switch reason {
	case WaitRate:
		e.polite.heldRate.Inc()
	case WaitRetryAfter:
		e.polite.heldRetryAfter.Inc()
	case WaitCircuit:
		e.polite.heldCircuit.Inc()
	}
}

// RateTokens adds delta to the leased, unassigned rate slots.
func (e *Metrics) RateTokens(delta int) {
	if e != nil && delta != 0 {
		e.polite.tokens.Add(float64(delta))
	}
}

// RateLeased counts one lease of n slots.
func (e *Metrics) RateLeased(n int) {
	if e != nil {
		e.polite.leases.Inc()
		e.polite.tokensLeased.Add(float64(n))
	}
}

// circuitChanged records a host's circuit opening or closing. It is called
// under the breaker's lock and takes only the metrics' own.
func (e *Metrics) circuitChanged(host string, open bool) {
	if e == nil {
		return
	}
	if open {
		e.polite.circuitsOpen.Inc()
	} else {
		e.polite.circuitsOpen.Dec()
	}
	e.polite.mu.Lock()
	defer e.polite.mu.Unlock()
	h := e.polite.hostLocked(host)
	if h == nil {
		return
	}
	if open {
		h.CircuitOpens++
		h.Circuit = "open"
	} else {
		h.Circuit = "closed"
	}
}

// hostEvent counts one politeness event of host.
func (e *Metrics) hostEvent(host string, kind hostEventKind) {
	if e == nil {
		return
	}
	e.polite.mu.Lock()
	defer e.polite.mu.Unlock()
	h := e.polite.hostLocked(host)
	if h == nil {
		return
	}
	switch kind {
	case hostRateWait:
		h.RateWaits++
	case hostRetryAfter:
		h.RetryAfters++
	case hostCircuitRefused:
		h.CircuitRefused++
	}
}

// hostLocked returns host's counters, making room by dropping the host
// with the fewest events (not an open circuit) when maxHostStats are kept.
// p.mu is held.
func (p *politeMetrics) hostLocked(host string) *HostStats {
	if h := p.hosts[host]; h != nil {
		return h
	}
	if len(p.hosts) >= maxHostStats {
		var low *HostStats
		for _, h := range p.hosts {
			if h.Circuit != "open" && (low == nil || h.total() < low.total()) {
				low = h
			}
		}
		if low == nil {
			return nil
		}
		delete(p.hosts, low.Host)
	}
	h := &HostStats{Host: host, Circuit: "closed"}
	p.hosts[host] = h
	return h
}

// TopHosts returns up to n hosts with the most politeness events in this
// process (open circuits first), from in-memory counters: hosts are never
// metric labels. It returns nil for a nil *Metrics. Safe for concurrent
// use.
func (e *Metrics) TopHosts(n int) []HostStats {
	if e == nil {
		return nil
	}
	e.polite.mu.Lock()
	out := make([]HostStats, 0, len(e.polite.hosts))
	for _, h := range e.polite.hosts {
		out = append(out, *h)
	}
	e.polite.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		oi, oj := out[i].Circuit == "open", out[j].Circuit == "open"
		if oi != oj {
			return oi
		}
		if ti, tj := out[i].total(), out[j].total(); ti != tj {
			return ti > tj
		}
		return out[i].Host < out[j].Host
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
