package executor

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Metric family names of the executor (what /metrics and the dashboard
// show).
const (
	// MetricJobsTotal counts jobs finished by this process, labelled
	// metrics.LabelOutcome and metrics.LabelCode.
	MetricJobsTotal = "pipeline_executor_jobs_total"
	// MetricInflight is the number of jobs being worked on.
	MetricInflight = "pipeline_executor_inflight"
	// MetricRedeliveriesTotal counts jobs received with a delivery count
	// above 1.
	MetricRedeliveriesTotal = "pipeline_executor_redeliveries_total"
	// MetricCanceledTotal counts jobs dropped or aborted because their
	// origin canceled them.
	MetricCanceledTotal = "pipeline_executor_canceled_total"
	// MetricFetchRetriesTotal counts in-process fetch retries.
	MetricFetchRetriesTotal = "pipeline_executor_fetch_retries_total"
	// MetricDeadLettersTotal counts jobs moved to the dead-letter stream.
	MetricDeadLettersTotal = "pipeline_executor_dead_letters_total"
	// MetricResultsHeldTotal counts results an executor held because the
	// results stream was full (its origin behind), stored once it had room.
	MetricResultsHeldTotal = "pipeline_executor_results_held_total"
	// MetricResultsTrimmedTotal counts results this process dropped from
	// the results stream (broker.TrimResults): acknowledged by their origin
	// and past the result retention, or any acknowledged ones while the
	// stream was over its trim threshold.
	MetricResultsTrimmedTotal = "pipeline_executor_results_trimmed_total"
	// MetricPublishFailuresTotal counts results that could not be stored.
	MetricPublishFailuresTotal = "pipeline_executor_publish_failures_total"
	// MetricFetchSeconds is the outbound fetch time histogram, retries
	// included.
	MetricFetchSeconds = "pipeline_executor_fetch_seconds"
	// MetricWaiting is the number of delivered jobs waiting in this process
	// before their fetch starts, labelled LabelReason (WaitHostCap).
	MetricWaiting = "pipeline_executor_waiting"
	// LabelReason says why a job waits.
	LabelReason = "reason"
	// WaitHostCap is the reason of a job whose destination host is at
	// Config.PerHostConcurrency in this executor.
	WaitHostCap = "host_cap"
	// WaitShare is the reason of a delivered job waiting for an executor
	// slot while the slots are busy with the jobs of every origin that has
	// work (at most one such job per origin per executor; the rest of an
	// origin's backlog stays in its consumer).
	WaitShare = "share"
	// MetricOriginBacklog is the number of jobs stored for an origin and not
	// yet acknowledged (queued or in flight), labelled LabelOrigin, as the
	// executor's last discovery round read it. Origin ids are few, so they
	// make a bounded label set; destination hosts are never labels.
	MetricOriginBacklog = "pipeline_executor_origin_backlog"
	// MetricBulkPacedSeconds counts the time large results waited for the
	// bulk pacer (pacer.go) before being stored.
	MetricBulkPacedSeconds = "pipeline_executor_bulk_paced_seconds_total"
	// LabelOrigin is the origin id label.
	LabelOrigin = "origin"
)

// waitHostCap is the label value of jobs waiting for their host.
const waitHostCap = WaitHostCap

// metricsPart is the key of the executors' part in a process's metrics.
const metricsPart = "executor"

// Metrics holds the metrics of the executors of a process (all of them
// share one set), registered in the process's registry (package metrics):
//
//	pipeline_executor_jobs_total{outcome="result|error",code}   jobs finished by this process
//	pipeline_executor_inflight                                  jobs being fetched
//	pipeline_executor_redeliveries_total                        jobs received with a delivery count above 1
//	pipeline_executor_results_held_total                        results held while the results stream was full, stored later
//	pipeline_executor_results_trimmed_total                     finished results dropped from the results stream by this process's trims
//	pipeline_executor_canceled_total                            jobs dropped or aborted: canceled by their origin
//	pipeline_executor_fetch_retries_total                       in-process fetch retries
//	pipeline_executor_dead_letters_total                        jobs moved to the dead-letter stream
//	pipeline_executor_publish_failures_total                    results that could not be stored
//	pipeline_executor_fetch_seconds                             outbound fetch time, retries included (histogram)
//	pipeline_executor_waiting{reason="host_cap|share|rate|retry_after"}  delivered jobs waiting for their host / an executor slot / a rate slot / a Retry-After
//	pipeline_executor_held_total{reason="rate|retry_after|circuit"}     jobs held for their host (circuit: refused by an open circuit)
//	pipeline_executor_circuits_open                             hosts whose circuit is open in this process
//	pipeline_executor_rate_tokens                               leased rate slots not yet given to a job
//	pipeline_executor_rate_tokens_leased_total                  rate slots leased from the shared schedules
//	pipeline_executor_rate_leases_total                         leases (KV compare-and-set writes)
//	pipeline_executor_origin_backlog{origin}                    jobs stored per origin, not yet acknowledged
//	pipeline_executor_bulk_paced_seconds_total                  time large results waited for the bulk pacer
//
// Label children are resolved when it is made: recording a job costs a few
// atomic adds and no allocation. A nil *Metrics records nothing. Its
// methods are safe for concurrent use.
type Metrics struct {
	jobs          *metrics.OutcomeCounters
	inflight      prometheus.Gauge
	redeliveries  prometheus.Counter
	canceled      prometheus.Counter
	held          prometheus.Counter
	trimmed       prometheus.Counter
	retries       prometheus.Counter
	deadLetters   prometheus.Counter
	publishFailed prometheus.Counter
	fetchSeconds  prometheus.Histogram
	waitHost      prometheus.Gauge
	waitShare     prometheus.Gauge
	backlog       *prometheus.GaugeVec
	bulkPaced     prometheus.Counter
	polite        *politeMetrics // politemetrics.go

	mu      sync.Mutex
	origins map[string]struct{} // backlog label values set
}

// MetricsOf returns the executor metrics of m, registering them in m's
// registry on first use; every executor of a process gets the same part.
// It returns nil for a nil m.
func MetricsOf(m *metrics.Metrics) *Metrics {
	return metrics.Part(m, metricsPart, newMetrics)
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	e := &Metrics{
		jobs: metrics.NewOutcomeCounters(prometheus.CounterOpts{
			Name: MetricJobsTotal,
			Help: "Jobs whose result this process stored: outcome=result (any HTTP status) or outcome=error with its wire error code.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricInflight,
			Help: "Jobs being worked on (fetch and result store) by this process.",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricRedeliveriesTotal,
			Help: "Jobs received with a delivery count above 1 (an executor crashed, timed out or could not store the result).",
		}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricResultsHeldTotal,
			Help: "Results held by the executor because the results stream was full (their origin is behind), stored once it had room: backpressure, not a failure.",
		}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricResultsTrimmedTotal,
			Help: "Finished results this process dropped from the results stream: acknowledged by their origin and past the result retention (or any acknowledged ones while the stream was nearly full).",
		}),
		canceled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricCanceledTotal,
			Help: "Jobs acknowledged without a fetch, or whose running fetch was aborted, because their origin canceled them.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricFetchRetriesTotal,
			Help: "Outbound fetches retried inside one delivery (connect failures, 502/503/504).",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricDeadLettersTotal,
			Help: "Jobs moved to the dead-letter stream after exhausting their deliveries.",
		}),
		publishFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricPublishFailuresTotal,
			Help: "Results that could not be stored (the job is redelivered).",
		}),
		fetchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricFetchSeconds,
			Help:    "Time spent fetching one job, retries and backoff included.",
			Buckets: metrics.LatencyBuckets(),
		}),
	}
	waiting := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricWaiting,
		Help: "Delivered jobs waiting in this process before their fetch starts, by reason: host_cap (their destination host is at executor.per_host_concurrency), share (every executor slot is busy; origins with work take turns), rate (waiting for a slot of the host's rate) or retry_after (waiting out a Retry-After).",
	}, []string{LabelReason})
	e.waitHost = waiting.WithLabelValues(WaitHostCap)
	e.waitShare = waiting.WithLabelValues(WaitShare)
	e.backlog = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricOriginBacklog,
		Help: "Jobs stored for an origin and not yet acknowledged (queued or in flight), as the executors' origin discovery last read it.",
	}, []string{LabelOrigin})
	e.bulkPaced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricBulkPacedSeconds,
		Help: "Time large results (the bulk lane) waited for the bulk pacer, which slows them while this process's goroutines wait for a CPU longer than executor.bulk_latency_target.",
	})
	e.origins = map[string]struct{}{}
	e.polite = newPoliteMetrics(reg, waiting)
	reg.MustRegister(e.jobs, e.inflight, e.redeliveries, e.canceled, e.held, e.trimmed, e.retries, e.deadLetters, e.publishFailed, e.fetchSeconds, waiting, e.backlog, e.bulkPaced)
	return e
}

// Begin counts a job starting (in flight); End must follow.
func (e *Metrics) Begin() {
	if e != nil {
		e.inflight.Inc()
	}
}

// End counts a job no longer in flight.
func (e *Metrics) End() {
	if e != nil {
		e.inflight.Dec()
	}
}

// BulkPaced counts d spent by a large result waiting for the bulk pacer.
func (e *Metrics) BulkPaced(d time.Duration) {
	if e != nil && d > 0 {
		e.bulkPaced.Add(d.Seconds())
	}
}

// Waiting adds delta to the jobs waiting for reason (WaitHostCap).
func (e *Metrics) Waiting(reason string, delta int) {
	if e == nil {
		return
	}
	switch reason {
	case WaitHostCap:
		e.waitHost.Add(float64(delta))
	case WaitShare:
		e.waitShare.Add(float64(delta))
	default:
		e.polite.waiting(reason, delta)
	}
}

// Backlog sets the per-origin backlog to byOrigin: origins missing from it
// are removed, so the label set is the origins with jobs now.
func (e *Metrics) Backlog(byOrigin map[string]uint64) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for o := range e.origins {
		if _, ok := byOrigin[o]; !ok {
			e.backlog.DeleteLabelValues(o)
			delete(e.origins, o)
		}
	}
	for o, n := range byOrigin {
		e.backlog.WithLabelValues(o).Set(float64(n))
		e.origins[o] = struct{}{}
	}
}

// Redelivered counts a job received again.
func (e *Metrics) Redelivered() {
	if e != nil {
		e.redeliveries.Inc()
	}
}

// ResultHeld counts a result held while the results stream was full.
func (e *Metrics) ResultHeld() {
	if e != nil {
		e.held.Inc()
	}
}

// Trimmed counts n results dropped from the results stream.
func (e *Metrics) Trimmed(n uint64) {
	if e != nil && n > 0 {
		e.trimmed.Add(float64(n))
	}
}

// Canceled counts a job dropped or aborted because its origin canceled it.
func (e *Metrics) Canceled() {
	if e != nil {
		e.canceled.Inc()
	}
}

// Retry counts one in-process fetch retry.
func (e *Metrics) Retry() {
	if e != nil {
		e.retries.Inc()
	}
}

// Fetched records the time one job's fetch took.
func (e *Metrics) Fetched(d time.Duration) {
	if e != nil {
		e.fetchSeconds.Observe(d.Seconds())
	}
}

// Result counts a job whose result (a response) was stored.
func (e *Metrics) Result() {
	if e != nil {
		e.jobs.Result()
	}
}

// Error counts a job whose error result with code was stored.
func (e *Metrics) Error(code broker.Code) {
	if e != nil {
		e.jobs.Error(code)
	}
}

// DeadLetter counts a job moved to the dead-letter stream.
func (e *Metrics) DeadLetter() {
	if e != nil {
		e.deadLetters.Inc()
	}
}

// PublishFailed counts a result that could not be stored.
func (e *Metrics) PublishFailed() {
	if e != nil {
		e.publishFailed.Inc()
	}
}

// count records a job whose result was stored, by outcome and error code.
func (e *Executor) count(res *broker.Result) {
	if res.Error != nil {
		e.m.Error(res.Error.Code)
		return
	}
	e.m.Result()
}
