package origin

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Metric family names of the origin (what /metrics and the dashboard show).
const (
	// MetricFetchesTotal counts start-fetch requests by the final frame they
	// got, labelled metrics.LabelOutcome and metrics.LabelCode.
	MetricFetchesTotal = "pipeline_origin_fetches_total"
	// MetricJobsEnqueuedTotal counts jobs stored in JetStream.
	MetricJobsEnqueuedTotal = "pipeline_origin_jobs_enqueued_total"
	// MetricDuplicatesSuppressedTotal counts redelivered results dropped.
	MetricDuplicatesSuppressedTotal = "pipeline_origin_duplicates_suppressed_total"
	// MetricDuplicateKeysTotal counts start-fetch frames whose key named an
	// existing job (nothing stored), and MetricCanceledTotal jobs canceled
	// by a cancel frame.
	MetricDuplicateKeysTotal = "pipeline_origin_duplicate_keys_total"
	MetricCanceledTotal      = "pipeline_origin_canceled_total"
	// MetricWSConnections is the number of open WebSocket sessions.
	MetricWSConnections = "pipeline_origin_ws_connections"
	// MetricInflightFetches is the number of accepted fetches without a
	// final frame.
	MetricInflightFetches = "pipeline_origin_inflight_fetches"
	// MetricExecutorsSeen is the number of distinct executors in results of
	// the last minute.
	MetricExecutorsSeen = "pipeline_origin_executors_seen"
	// MetricWSRefusedTotal counts WebSocket upgrades refused, labelled
	// LabelReason (RefusedMaxConnections).
	MetricWSRefusedTotal = "pipeline_origin_ws_refused_total"
	// MetricClosedAtAcceptTotal counts connections closed at accept, before
	// any read, because their source address is blocked after too many auth
	// refusals (RefusalLimits), and MetricSourcesBlockedTotal the blocks.
	MetricClosedAtAcceptTotal = "pipeline_origin_closed_at_accept_total"
	MetricSourcesBlockedTotal = "pipeline_origin_sources_blocked_total"
	// MetricSourcesFiltered is the number of blocked source addresses
	// whose packets the kernel drops before a TCP handshake (Linux).
	MetricSourcesFiltered = "pipeline_origin_sources_filtered"
	// MetricSlowClientsTotal counts sessions closed with 1008 because their
	// send queue was full or a write to them timed out (a client that does
	// not read).
	MetricSlowClientsTotal = "pipeline_origin_slow_clients_closed_total"
	// MetricPhaseSeconds is the per-phase latency histogram, labelled
	// LabelPhase.
	MetricPhaseSeconds = "pipeline_phase_seconds"
)

// LabelPhase is the label of MetricPhaseSeconds; its values are Phases.
const LabelPhase = "phase"

// LabelReason is the label of MetricWSRefusedTotal.
const LabelReason = "reason"

// RefusedMaxConnections is the reason for an upgrade refused because the
// origin holds origin.max_connections sessions.
const RefusedMaxConnections = "max_connections"

// Phase label values of MetricPhaseSeconds (PROTOCOL.md §1 timing).
const (
	PhaseEnqueue = "enqueue" // client frame received → job stored
	PhaseQueue   = "queue"   // stored → picked up by an executor
	PhaseFetch   = "fetch"   // the outbound HTTP call
	PhaseTotal   = "total"   // client frame received → result frame queued
)

// Phases lists the phase label values in pipeline order.
func Phases() []string { return []string{PhaseEnqueue, PhaseQueue, PhaseFetch, PhaseTotal} }

// metricsPart is the key of the origin's part in a process's metrics.
const metricsPart = "origin"

// executorsSeenWindow is how long an executor id counts as seen after its
// last result.
const executorsSeenWindow = time.Minute

// Metrics holds the metrics of the origins of a process, registered in the
// process's registry (package metrics):
//
//	pipeline_origin_fetches_total{outcome="result|error",code}  start-fetch requests by final frame
//	pipeline_origin_jobs_enqueued_total                         jobs stored in JetStream
//	pipeline_origin_duplicates_suppressed_total                 redelivered results dropped
//	pipeline_origin_ws_connections                              open WebSocket sessions
//	pipeline_origin_ws_refused_total{reason="max_connections"}  WebSocket upgrades refused (HTTP 503)
//	pipeline_origin_closed_at_accept_total                      connections closed at accept: source blocked
//	pipeline_origin_sources_blocked_total                       sources blocked after too many auth refusals
//	pipeline_origin_slow_clients_closed_total                   sessions closed (1008): send queue full
//	pipeline_origin_inflight_fetches                            accepted fetches without a final frame
//	pipeline_origin_executors_seen                              distinct executors in results of the last minute
//	pipeline_phase_seconds{phase="enqueue|queue|fetch|total"}   per-phase latency (histogram)
//
// Label children are resolved when it is made: recording a fetch costs a
// few atomic adds and no allocation. A nil *Metrics records nothing. Its
// methods are safe for concurrent use.
type Metrics struct {
	fetches    *metrics.OutcomeCounters
	enqueued   prometheus.Counter
	duplicates prometheus.Counter
	dupKeys    prometheus.Counter
	canceled   prometheus.Counter
	conns      prometheus.Gauge
	refusedMax prometheus.Counter
	closedAcc  prometheus.Counter
	blocked    prometheus.Counter
	filtered   prometheus.Gauge
	slow       prometheus.Counter
	phases     [4]prometheus.Observer // enqueue, queue, fetch, total

	mu       sync.Mutex
	inflight map[int]func() int // sources summed at scrape time
	nextSrc  int
	seen     map[string]time.Time // executor id → last result
	lastSeen string
	lastAt   time.Time
}

// MetricsOf returns the origin metrics of m, registering them in m's
// registry on first use; every origin of a process gets the same part. It
// returns nil for a nil m.
func MetricsOf(m *metrics.Metrics) *Metrics {
	return metrics.Part(m, metricsPart, newMetrics)
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	o := &Metrics{
		inflight: make(map[int]func() int),
		seen:     make(map[string]time.Time),
	}
	o.fetches = metrics.NewOutcomeCounters(prometheus.CounterOpts{
		Name: MetricFetchesTotal,
		Help: "Start-fetch requests by the final frame they got: outcome=result (any HTTP status) or outcome=error with its wire error code.",
	})
	o.enqueued = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricJobsEnqueuedTotal,
		Help: "Fetch jobs stored in the jobs stream (the client was told enqueued).",
	})
	o.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricDuplicatesSuppressedTotal,
		Help: "Results dropped because their job's continuation had already run (redeliveries).",
	})
	o.dupKeys = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricDuplicateKeysTotal,
		Help: "Start-fetch frames whose key named an existing job: nothing was stored, the frame follows that job.",
	})
	o.canceled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricCanceledTotal,
		Help: "Jobs canceled by a cancel frame before their final frame.",
	})
	o.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricWSConnections,
		Help: "Open WebSocket sessions.",
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricWSRefusedTotal,
		Help: "WebSocket upgrades refused with HTTP 503 before any WebSocket work, by reason.",
	}, []string{LabelReason})
	o.refusedMax = refused.WithLabelValues(RefusedMaxConnections)
	o.closedAcc = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricClosedAtAcceptTotal,
		Help: "Connections closed at accept, before anything was read, because their source address is blocked after more than origin.refusals_per_source auth refusals in origin.refusal_window.",
	})
	o.blocked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricSourcesBlockedTotal,
		Help: "Source addresses blocked (their connections closed at accept for origin.refusal_block) after more than origin.refusals_per_source auth refusals in origin.refusal_window.",
	})
	o.filtered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricSourcesFiltered,
		Help: "Blocked source addresses whose packets to the origin's listener the kernel drops, SYNs included, so that they get no TCP handshake (Linux; at most 256, the most recently blocked).",
	})
	o.slow = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricSlowClientsTotal,
		Help: "WebSocket sessions closed with 1008 because their send queue was full (the client did not read); their results stay available with get-result.",
	})
	phases := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricPhaseSeconds,
		Help:    "Latency of each phase of a fetch, measured at the origin: enqueue (frame received to job stored), queue (stored to picked up), fetch (outbound call), total (frame received to result).",
		Buckets: metrics.LatencyBuckets(),
	}, []string{LabelPhase})
	for i, p := range Phases() {
		o.phases[i] = phases.WithLabelValues(p)
	}
	reg.MustRegister(o.fetches, o.enqueued, o.duplicates, o.dupKeys, o.canceled, o.conns, refused, o.closedAcc, o.blocked, o.filtered, o.slow, phases,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricInflightFetches,
			Help: "Accepted fetches whose final frame has not been sent yet.",
		}, o.inflightNow),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricExecutorsSeen,
			Help: "Distinct executors that produced a result for this process's origins in the last minute.",
		}, func() float64 { return float64(o.ExecutorsSeen()) }),
	)
	return o
}

// Result counts a fetch that ended with a result frame.
func (o *Metrics) Result() {
	if o != nil {
		o.fetches.Result()
	}
}

// Error counts a fetch (or a start-fetch frame) that ended with an error
// frame carrying code.
func (o *Metrics) Error(code broker.Code) {
	if o != nil {
		o.fetches.Error(code)
	}
}

// Enqueued counts a job JetStream acknowledged.
func (o *Metrics) Enqueued() {
	if o != nil {
		o.enqueued.Inc()
	}
}

// Duplicate counts a suppressed duplicate result.
func (o *Metrics) Duplicate() {
	if o != nil {
		o.duplicates.Inc()
	}
}

// DuplicateKey counts a start-fetch whose key named an existing job.
func (o *Metrics) DuplicateKey() {
	if o != nil {
		o.dupKeys.Inc()
	}
}

// Canceled counts a job canceled before its final frame.
func (o *Metrics) Canceled() {
	if o != nil {
		o.canceled.Inc()
	}
}

// ConnOpened counts a new WebSocket session; ConnClosed must follow it.
func (o *Metrics) ConnOpened() {
	if o != nil {
		o.conns.Inc()
	}
}

// ConnClosed counts a WebSocket session gone.
func (o *Metrics) ConnClosed() {
	if o != nil {
		o.conns.Dec()
	}
}

// Refused counts a WebSocket upgrade refused because the origin is at
// origin.max_connections.
func (o *Metrics) Refused() {
	if o != nil {
		o.refusedMax.Inc()
	}
}

// ClosedAtAccept counts a connection closed at accept: its source is
// blocked.
func (o *Metrics) ClosedAtAccept() {
	if o != nil {
		o.closedAcc.Inc()
	}
}

// SourceBlocked counts a source address blocked after too many auth
// refusals.
func (o *Metrics) SourceBlocked() {
	if o != nil {
		o.blocked.Inc()
	}
}

// SourcesFiltered sets the number of sources in the kernel filter.
func (o *Metrics) SourcesFiltered(n int) {
	if o != nil {
		o.filtered.Set(float64(n))
	}
}

// SlowClient counts a session closed because its send queue was full.
func (o *Metrics) SlowClient() {
	if o != nil {
		o.slow.Inc()
	}
}

// Phases records the four phase durations of one finished fetch.
func (o *Metrics) Phases(enqueue, queue, fetch, total time.Duration) {
	if o == nil {
		return
	}
	o.phases[0].Observe(enqueue.Seconds())
	o.phases[1].Observe(queue.Seconds())
	o.phases[2].Observe(fetch.Seconds())
	o.phases[3].Observe(total.Seconds())
}

// TrackInFlight adds a source of in-flight fetches (an origin's count of
// accepted fetches without a final frame), read at scrape time and summed
// over sources. The returned func removes it.
func (o *Metrics) TrackInFlight(count func() int) (untrack func()) {
	if o == nil || count == nil {
		return func() {}
	}
	o.mu.Lock()
	id := o.nextSrc
	o.nextSrc++
	o.inflight[id] = count
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		delete(o.inflight, id)
		o.mu.Unlock()
	}
}

func (o *Metrics) inflightNow() float64 {
	o.mu.Lock()
	srcs := make([]func() int, 0, len(o.inflight))
	for _, f := range o.inflight {
		srcs = append(srcs, f)
	}
	o.mu.Unlock()
	n := 0
	for _, f := range srcs { // outside o.mu: a source takes its own locks
		n += f()
	}
	return float64(n)
}

// ExecutorSeen records that executor id produced a result. It is cheap for
// a run of results from the same executor.
func (o *Metrics) ExecutorSeen(id string) {
	if o == nil || id == "" {
		return
	}
	now := time.Now()
	o.mu.Lock()
	if id != o.lastSeen || now.Sub(o.lastAt) > time.Second {
		o.lastSeen, o.lastAt = id, now
		o.seen[id] = now
	}
	o.mu.Unlock()
}

// ExecutorsSeen is the number of distinct executors that produced a result
// in the last minute. Older entries are forgotten.
func (o *Metrics) ExecutorsSeen() int {
	if o == nil {
		return 0
	}
	cutoff := time.Now().Add(-executorsSeenWindow)
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, t := range o.seen {
		if t.Before(cutoff) {
			delete(o.seen, id)
		}
	}
	return len(o.seen)
}

// observe records one finished fetch in the metrics: its outcome and the
// four phase latencies the client is told in t.
func (s *Server) observe(res *broker.Result, t Timing) {
	if s.m == nil {
		return
	}
	if res.Error != nil {
		s.m.Error(res.Error.Code)
	} else {
		s.m.Result()
	}
	s.m.Phases(msDuration(t.EnqueueMS), msDuration(t.QueueMS), msDuration(t.FetchMS), msDuration(t.TotalMS))
}

// msDuration converts milliseconds back to a Duration.
func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
