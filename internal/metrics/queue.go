package metrics

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
)

// Metric family names of the jobs stream's backlog (WatchQueue).
const (
	// MetricJobsQueueDepth is the number of jobs waiting for an executor.
	MetricJobsQueueDepth = "pipeline_jobs_queue_depth"
	// MetricJobsAckPending is the number of jobs delivered to executors and
	// not yet acknowledged.
	MetricJobsAckPending = "pipeline_jobs_ack_pending"
)

// queueCacheTTL is how long one read of the jobs stream's state
// serves scrapes; queueTimeout bounds the read.
const (
	queueCacheTTL = time.Second
	queueTimeout  = 500 * time.Millisecond
)

// WatchQueue adds MetricJobsQueueDepth (jobs waiting for an executor) and
// MetricJobsAckPending (jobs delivered, not yet acknowledged), read from the
// jobs stream and its per-origin jobs consumers through js at scrape time,
// at most once a second. When they cannot be read (NATS is away) the
// two gauges are left out of the scrape rather than reported stale. Only the
// first call per Metrics registers; later calls do nothing. The stream's
// keepers (broker.KeepJobsBlock, on s.JobsKeeper) are not counted.
func (m *Metrics) WatchQueue(js jetstream.JetStream, s broker.Subjects) {
	if m == nil || js == nil {
		return
	}
	m.queueOnce.Do(func() { m.reg.MustRegister(newQueueCollector(js, s)) })
}

// queueCollector reports the jobs consumer's backlog.
type queueCollector struct {
	js      jetstream.JetStream
	keeper  string // the keepers' subject
	depth   *prometheus.Desc
	pending *prometheus.Desc

	mu   sync.Mutex // held during a read: concurrent scrapes share it
	at   time.Time
	info *queueState
	err  error
}

func newQueueCollector(js jetstream.JetStream, s broker.Subjects) *queueCollector {
	return &queueCollector{
		js:     js,
		keeper: s.JobsKeeper(),
		depth: prometheus.NewDesc(MetricJobsQueueDepth,
			"Jobs stored and not yet delivered to any executor (jobs stream messages minus the jobs consumers' NumAckPending).", nil, nil),
		pending: prometheus.NewDesc(MetricJobsAckPending,
			"Jobs delivered to executors and not yet acknowledged (sum of the per-origin jobs consumers' NumAckPending).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.depth
	ch <- q.pending
}

// Collect implements prometheus.Collector.
func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	info, err := q.read()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(q.depth, prometheus.GaugeValue, float64(info.queued))
	ch <- prometheus.MustNewConstMetric(q.pending, prometheus.GaugeValue, float64(info.ackPending))
}

// read returns the cached consumer info, refreshing it when older than
// queueCacheTTL.
func (q *queueCollector) read() (*queueState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.at.IsZero() && time.Since(q.at) < queueCacheTTL {
		return q.info, q.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueTimeout)
	defer cancel()
	q.info, q.err = readQueue(ctx, q.js, q.keeper)
	q.at = time.Now()
	return q.info, q.err
}

// queueState is the jobs backlog: stored jobs not yet delivered, and
// delivered ones not yet acknowledged.
type queueState struct{ queued, ackPending uint64 }

// readQueue reads the jobs stream's message count and its jobs consumers'
// ack-pending counts (one consumer per origin; a consumer list is paged by
// the server, 256 infos a page), less the keepers on subject keeper.
func readQueue(ctx context.Context, js jetstream.JetStream, keeper string) (*queueState, error) {
	st, err := js.Stream(ctx, broker.JobsStream)
	if err != nil {
		return nil, fmt.Errorf("queue depth: stream %s: %w", broker.JobsStream, err)
	}
	var q queueState
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if _, ok := broker.JobsConsumerOrigin(ci.Name); ok {
			q.ackPending += uint64(ci.NumAckPending)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("queue depth: consumers of %s: %w", broker.JobsStream, err)
	}
	msgs := st.CachedInfo().State.Msgs
	if msgs > q.ackPending {
		// Less the stream's keeper (broker.KeepJobsBlock), which is not a
		// job: one message, two for a moment, so only asked for when it
		// could matter.
		keepers, err := st.Info(ctx, jetstream.WithSubjectFilter(keeper))
		if err != nil {
			return nil, fmt.Errorf("queue depth: keepers of %s: %w", broker.JobsStream, err)
		}
		msgs -= min(msgs, keepers.State.Subjects[keeper])
	}
	if msgs > q.ackPending {
		q.queued = msgs - q.ackPending
	}
	return &q, nil
}
