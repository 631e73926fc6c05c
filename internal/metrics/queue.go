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

// queueCacheTTL is how long one read of the executors consumer's state
// serves scrapes; queueTimeout bounds the read.
const (
	queueCacheTTL = time.Second
	queueTimeout  = 500 * time.Millisecond
)

// WatchQueue adds MetricJobsQueueDepth (jobs waiting for an executor) and
// MetricJobsAckPending (jobs delivered, not yet acknowledged), read from the
// shared executors consumer through js at scrape time, at most once a
// second. When the consumer cannot be read (NATS is away) the
// two gauges are left out of the scrape rather than reported stale. Only the
// first call per Metrics registers; later calls do nothing.
func (m *Metrics) WatchQueue(js jetstream.JetStream) {
	if m == nil || js == nil {
		return
	}
	m.queueOnce.Do(func() { m.reg.MustRegister(newQueueCollector(js)) })
}

// queueCollector reports the jobs consumer's backlog.
type queueCollector struct {
	js      jetstream.JetStream
	depth   *prometheus.Desc
	pending *prometheus.Desc

	mu   sync.Mutex // held during a read: concurrent scrapes share it
	at   time.Time
	info *jetstream.ConsumerInfo
	err  error
}

func newQueueCollector(js jetstream.JetStream) *queueCollector {
	return &queueCollector{
		js: js,
		depth: prometheus.NewDesc(MetricJobsQueueDepth,
			"Jobs stored and not yet delivered to any executor (consumer "+broker.ExecutorsConsumer+" NumPending).", nil, nil),
		pending: prometheus.NewDesc(MetricJobsAckPending,
			"Jobs delivered to executors and not yet acknowledged (consumer "+broker.ExecutorsConsumer+" NumAckPending).", nil, nil),
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
	ch <- prometheus.MustNewConstMetric(q.depth, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(q.pending, prometheus.GaugeValue, float64(info.NumAckPending))
}

// read returns the cached consumer info, refreshing it when older than
// queueCacheTTL.
func (q *queueCollector) read() (*jetstream.ConsumerInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.at.IsZero() && time.Since(q.at) < queueCacheTTL {
		return q.info, q.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueTimeout)
	defer cancel()
	q.info, q.err = consumerInfo(ctx, q.js)
	q.at = time.Now()
	return q.info, q.err
}

func consumerInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	cons, err := js.Consumer(ctx, broker.JobsStream, broker.ExecutorsConsumer)
	if err != nil {
		return nil, fmt.Errorf("queue depth: consumer %s: %w", broker.ExecutorsConsumer, err)
	}
	// Consumer already fetched the info; CachedInfo avoids a second request.
	return cons.CachedInfo(), nil
}
