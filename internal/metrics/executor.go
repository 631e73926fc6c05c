package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
)

// Executor holds the metrics of the executors of a process (all of them
// share one set). A nil *Executor records nothing. Its methods are safe for
// concurrent use.
type Executor struct {
	jobs          *OutcomeCounters
	inflight      prometheus.Gauge
	redeliveries  prometheus.Counter
	retries       prometheus.Counter
	deadLetters   prometheus.Counter
	publishFailed prometheus.Counter
	fetchSeconds  prometheus.Histogram
}

func newExecutor(reg prometheus.Registerer) *Executor {
	sub := "executor"
	e := &Executor{
		jobs: NewOutcomeCounters(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "jobs_total",
			Help: "Jobs whose result this process stored: outcome=result (any HTTP status) or outcome=error with its wire error code.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: sub, Name: "inflight",
			Help: "Jobs being worked on (fetch and result store) by this process.",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "redeliveries_total",
			Help: "Jobs received with a delivery count above 1 (an executor crashed, timed out or could not store the result).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "fetch_retries_total",
			Help: "Outbound fetches retried inside one delivery (connect failures, 502/503/504).",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "dead_letters_total",
			Help: "Jobs moved to the dead-letter stream after exhausting their deliveries.",
		}),
		publishFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "publish_failures_total",
			Help: "Results that could not be stored (the job is redelivered).",
		}),
		fetchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: sub, Name: "fetch_seconds",
			Help:    "Time spent fetching one job, retries and backoff included.",
			Buckets: LatencyBuckets(),
		}),
	}
	reg.MustRegister(e.jobs, e.inflight, e.redeliveries, e.retries, e.deadLetters, e.publishFailed, e.fetchSeconds)
	return e
}

// Begin counts a job starting (in flight); End must follow.
func (e *Executor) Begin() {
	if e != nil {
		e.inflight.Inc()
	}
}

// End counts a job no longer in flight.
func (e *Executor) End() {
	if e != nil {
		e.inflight.Dec()
	}
}

// Redelivered counts a job received again.
func (e *Executor) Redelivered() {
	if e != nil {
		e.redeliveries.Inc()
	}
}

// Retry counts one in-process fetch retry.
func (e *Executor) Retry() {
	if e != nil {
		e.retries.Inc()
	}
}

// Fetched records the time one job's fetch took.
func (e *Executor) Fetched(d time.Duration) {
	if e != nil {
		e.fetchSeconds.Observe(d.Seconds())
	}
}

// Result counts a job whose result (a response) was stored.
func (e *Executor) Result() {
	if e != nil {
		e.jobs.Result()
	}
}

// Error counts a job whose error result with code was stored.
func (e *Executor) Error(code broker.Code) {
	if e != nil {
		e.jobs.Error(code)
	}
}

// DeadLetter counts a job moved to the dead-letter stream.
func (e *Executor) DeadLetter() {
	if e != nil {
		e.deadLetters.Inc()
	}
}

// PublishFailed counts a result that could not be stored.
func (e *Executor) PublishFailed() {
	if e != nil {
		e.publishFailed.Inc()
	}
}
