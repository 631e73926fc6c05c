package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
)

// Phase label values of pipeline_phase_seconds (PROTOCOL.md §1 timing).
const (
	PhaseEnqueue = "enqueue" // client frame received → job stored
	PhaseQueue   = "queue"   // stored → picked up by an executor
	PhaseFetch   = "fetch"   // the outbound HTTP call
	PhaseTotal   = "total"   // client frame received → result frame queued
)

// Phases lists the phase label values in pipeline order.
func Phases() []string { return []string{PhaseEnqueue, PhaseQueue, PhaseFetch, PhaseTotal} }

// executorsSeenWindow is how long an executor id counts as seen after its
// last result.
const executorsSeenWindow = time.Minute

// Origin holds the metrics of the origins of a process. A nil *Origin
// records nothing. Its methods are safe for concurrent use.
type Origin struct {
	fetches    *OutcomeCounters
	enqueued   prometheus.Counter
	duplicates prometheus.Counter
	conns      prometheus.Gauge
	phases     [4]prometheus.Observer // enqueue, queue, fetch, total

	mu       sync.Mutex
	inflight map[int]func() int // sources summed at scrape time
	nextSrc  int
	seen     map[string]time.Time // executor id → last result
	lastSeen string
	lastAt   time.Time
}

func newOrigin(reg prometheus.Registerer) *Origin {
	o := &Origin{
		inflight: make(map[int]func() int),
		seen:     make(map[string]time.Time),
	}
	o.fetches = NewOutcomeCounters(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "origin", Name: "fetches_total",
		Help: "Start-fetch requests by the final frame they got: outcome=result (any HTTP status) or outcome=error with its wire error code.",
	})
	o.enqueued = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "origin", Name: "jobs_enqueued_total",
		Help: "Fetch jobs stored in the jobs stream (the client was told enqueued).",
	})
	o.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "origin", Name: "duplicates_suppressed_total",
		Help: "Results dropped because their job's continuation had already run (redeliveries).",
	})
	o.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "origin", Name: "ws_connections",
		Help: "Open WebSocket sessions.",
	})
	phases := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "phase_seconds",
		Help:    "Latency of each phase of a fetch, measured at the origin: enqueue (frame received to job stored), queue (stored to picked up), fetch (outbound call), total (frame received to result).",
		Buckets: LatencyBuckets(),
	}, []string{"phase"})
	for i, p := range Phases() {
		o.phases[i] = phases.WithLabelValues(p)
	}
	reg.MustRegister(o.fetches, o.enqueued, o.duplicates, o.conns, phases,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "origin", Name: "inflight_fetches",
			Help: "Accepted fetches whose final frame has not been sent yet.",
		}, o.inflightNow),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "origin", Name: "executors_seen",
			Help: "Distinct executors that produced a result for this process's origins in the last minute.",
		}, func() float64 { return float64(o.ExecutorsSeen()) }),
	)
	return o
}

// Result counts a fetch that ended with a result frame.
func (o *Origin) Result() {
	if o != nil {
		o.fetches.Result()
	}
}

// Error counts a fetch (or a start-fetch frame) that ended with an error
// frame carrying code.
func (o *Origin) Error(code broker.Code) {
	if o != nil {
		o.fetches.Error(code)
	}
}

// Enqueued counts a job JetStream acknowledged.
func (o *Origin) Enqueued() {
	if o != nil {
		o.enqueued.Inc()
	}
}

// Duplicate counts a suppressed duplicate result.
func (o *Origin) Duplicate() {
	if o != nil {
		o.duplicates.Inc()
	}
}

// ConnOpened counts a new WebSocket session; ConnClosed must follow it.
func (o *Origin) ConnOpened() {
	if o != nil {
		o.conns.Inc()
	}
}

// ConnClosed counts a WebSocket session gone.
func (o *Origin) ConnClosed() {
	if o != nil {
		o.conns.Dec()
	}
}

// Phases records the four phase durations of one finished fetch.
func (o *Origin) Phases(enqueue, queue, fetch, total time.Duration) {
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
func (o *Origin) TrackInFlight(count func() int) (untrack func()) {
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

func (o *Origin) inflightNow() float64 {
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
func (o *Origin) ExecutorSeen(id string) {
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
func (o *Origin) ExecutorsSeen() int {
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
