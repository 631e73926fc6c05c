package dashboard

import (
	"math"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/origin"
)

// Stats is the JSON document GET /api/stats returns: the live numbers of
// the process's origin (and of its in-process executors, when it has any).
// Rates and percentiles are over recent windows; totals are since the
// process started. Values that cannot be known (no queue reading, no
// observation in the window) are null.
type Stats struct {
	Title   string  `json:"title"`
	TimeMS  int64   `json:"time_ms"`
	UptimeS float64 `json:"uptime_s"`

	// Connections is the number of open WebSocket sessions.
	Connections float64 `json:"connections"`
	// InFlight is the number of accepted fetches without a final frame.
	InFlight float64 `json:"inflight"`

	// JobsTotal counts start-fetch requests that got their final frame
	// (result or error) since start; ResultsTotal and ErrorsTotal split it.
	JobsTotal    float64 `json:"jobs_total"`
	ResultsTotal float64 `json:"results_total"`
	ErrorsTotal  float64 `json:"errors_total"`
	// JobsPerS is JobsTotal's rate over the last RateWindowS seconds.
	JobsPerS    float64 `json:"jobs_per_s"`
	RateWindowS float64 `json:"rate_window_s"`
	// EnqueuedTotal counts jobs stored in JetStream.
	EnqueuedTotal float64 `json:"enqueued_total"`

	// Phases are p50/p99 per phase over the last LatencyWindowS seconds.
	Phases         []PhaseStats `json:"phases"`
	LatencyWindowS float64      `json:"latency_window_s"`

	// ExecutorsSeen is the number of distinct executors that produced a
	// result in the last minute.
	ExecutorsSeen float64 `json:"executors_seen"`
	// QueueDepth is the number of jobs waiting for an executor; AckPending
	// the jobs delivered but not acknowledged.
	QueueDepth *float64 `json:"queue_depth"`
	AckPending *float64 `json:"ack_pending"`
	// WaitingHostCap and WaitingShare are the jobs this process's executors
	// hold before fetching them, by reason: their host is at its cap, or
	// every executor slot is busy with the origins' shares.
	WaitingHostCap float64 `json:"waiting_host_cap"`
	WaitingShare   float64 `json:"waiting_share"`
	// WaitingRate and WaitingRetryAfter are the jobs held for their
	// destination: for a slot of its rate, or out of a Retry-After.
	WaitingRate       float64 `json:"waiting_rate"`
	WaitingRetryAfter float64 `json:"waiting_retry_after"`
	// HeldByReason counts holds since start by reason (rate, retry_after,
	// circuit: refused by an open circuit).
	HeldByReason map[string]float64 `json:"held_by_reason"`
	// CircuitsOpen is the number of destination hosts whose circuit is
	// open in this process; RateTokens the leased rate slots not yet used.
	CircuitsOpen float64 `json:"circuits_open"`
	RateTokens   float64 `json:"rate_tokens"`
	// TopHosts are the destination hosts with the most politeness events
	// (open circuits first), from the executors' in-memory counters.
	TopHosts []executor.HostStats `json:"top_hosts"`
	// OriginBacklog is the jobs stored per origin and not yet acknowledged,
	// as this process's executors last read it (origins without jobs are
	// left out).
	OriginBacklog map[string]float64 `json:"origin_backlog"`

	// ErrorsByCode counts error frames by wire code since start (codes
	// with a zero count are left out).
	ErrorsByCode map[string]float64 `json:"errors_by_code"`

	DuplicatesTotal   float64 `json:"duplicates_total"`
	RedeliveriesTotal float64 `json:"redeliveries_total"`
	// ExecutorJobsTotal counts jobs finished by executors in this process.
	ExecutorJobsTotal float64 `json:"executor_jobs_total"`
	// RPCCallsTotal and RPCPerS count /call function calls.
	RPCCallsTotal float64 `json:"rpc_calls_total"`
	RPCPerS       float64 `json:"rpc_per_s"`
}

// PhaseStats are one phase's latency percentiles, in milliseconds, over
// the latency window; Count is the number of observations in it.
type PhaseStats struct {
	Phase string   `json:"phase"`
	P50MS *float64 `json:"p50_ms"`
	P99MS *float64 `json:"p99_ms"`
	Count uint64   `json:"count"`
}

// snapshot is what one Gather said, reduced to what the dashboard shows.
type snapshot struct {
	at time.Time

	results, enqueued, duplicates  float64
	errors                         map[string]float64
	connections, inflight, seen    float64
	queueDepth, ackPending         *float64
	waitHost, waitShare            float64
	waitRate, waitRetryAfter       float64
	held                           map[string]float64
	circuitsOpen, rateTokens       float64
	backlog                        map[string]float64
	execJobs, redeliveries, rpcCal float64
	phases                         map[string]hist
}

// hist is a cumulative histogram: bucket upper bounds and cumulative
// counts (the +Inf bucket being count).
type hist struct {
	upper []float64
	cum   []uint64
	count uint64
}

func (s *snapshot) jobs() float64 { return s.results + s.errorsTotal() }

func (s *snapshot) errorsTotal() float64 {
	n := 0.0
	for _, v := range s.errors {
		n += v
	}
	return n
}

// snapshotOf reduces gathered metric families.
func snapshotOf(at time.Time, mfs []*dto.MetricFamily) *snapshot {
	s := &snapshot{at: at, errors: map[string]float64{}, phases: map[string]hist{}, backlog: map[string]float64{},
		held: map[string]float64{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case origin.MetricFetchesTotal:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				if label(m, metrics.LabelOutcome) == metrics.OutcomeResult {
					s.results += v
				} else if v > 0 {
					s.errors[label(m, metrics.LabelCode)] += v
				}
			}
		case origin.MetricJobsEnqueuedTotal:
			s.enqueued = sumCounter(mf)
		case origin.MetricDuplicatesSuppressedTotal:
			s.duplicates = sumCounter(mf)
		case executor.MetricJobsTotal:
			s.execJobs = sumCounter(mf)
		case executor.MetricRedeliveriesTotal:
			s.redeliveries = sumCounter(mf)
		case origin.MetricRPCCallsTotal:
			s.rpcCal = sumCounter(mf)
		case origin.MetricWSConnections:
			s.connections = sumGauge(mf)
		case origin.MetricInflightFetches:
			s.inflight = sumGauge(mf)
		case origin.MetricExecutorsSeen:
			s.seen = sumGauge(mf)
		case metrics.MetricJobsQueueDepth:
			v := sumGauge(mf)
			s.queueDepth = &v
		case metrics.MetricJobsAckPending:
			v := sumGauge(mf)
			s.ackPending = &v
		case executor.MetricWaiting:
			for _, m := range mf.GetMetric() {
				switch label(m, executor.LabelReason) {
				case executor.WaitHostCap:
					s.waitHost += m.GetGauge().GetValue()
				case executor.WaitShare:
					s.waitShare += m.GetGauge().GetValue()
				case executor.WaitRate:
					s.waitRate += m.GetGauge().GetValue()
				case executor.WaitRetryAfter:
					s.waitRetryAfter += m.GetGauge().GetValue()
				}
			}
		case executor.MetricHeldTotal:
			for _, m := range mf.GetMetric() {
				if v := m.GetCounter().GetValue(); v > 0 {
					s.held[label(m, executor.LabelReason)] = v
				}
			}
		case executor.MetricCircuitsOpen:
			s.circuitsOpen = sumGauge(mf)
		case executor.MetricRateTokens:
			s.rateTokens = sumGauge(mf)
		case executor.MetricOriginBacklog:
			for _, m := range mf.GetMetric() {
				if v := m.GetGauge().GetValue(); v > 0 {
					s.backlog[label(m, executor.LabelOrigin)] = v
				}
			}
		case origin.MetricPhaseSeconds:
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				var hs hist
				for _, b := range h.GetBucket() {
					hs.upper = append(hs.upper, b.GetUpperBound())
					hs.cum = append(hs.cum, b.GetCumulativeCount())
				}
				hs.count = h.GetSampleCount()
				s.phases[label(m, origin.LabelPhase)] = hs
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func sumCounter(mf *dto.MetricFamily) float64 {
	n := 0.0
	for _, m := range mf.GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

func sumGauge(mf *dto.MetricFamily) float64 {
	n := 0.0
	for _, m := range mf.GetMetric() {
		n += m.GetGauge().GetValue()
	}
	return n
}

// delta is h minus base (base may be the zero hist), bucket by bucket.
func (h hist) delta(base hist) hist {
	d := hist{upper: h.upper, cum: make([]uint64, len(h.cum)), count: h.count - min(base.count, h.count)}
	for i, c := range h.cum {
		var b uint64
		if i < len(base.cum) {
			b = base.cum[i]
		}
		d.cum[i] = c - min(b, c)
	}
	return d
}

// quantile estimates the q-quantile (0..1) in seconds by linear
// interpolation inside the bucket holding it, as PromQL's
// histogram_quantile does; ok is false without observations. A quantile in
// the +Inf bucket is reported as the largest finite bound.
func (h hist) quantile(q float64) (v float64, ok bool) {
	if h.count == 0 || len(h.upper) == 0 {
		return 0, false
	}
	rank := q * float64(h.count)
	prevBound, prevCum := 0.0, uint64(0)
	for i, up := range h.upper {
		c := h.cum[i]
		if float64(c) >= rank && c > prevCum {
			frac := (rank - float64(prevCum)) / float64(c-prevCum)
			return prevBound + (up-prevBound)*frac, true
		}
		prevBound, prevCum = up, c
	}
	return h.upper[len(h.upper)-1], true
}

// statsOf computes Stats from the current snapshot and the baselines of
// the rate and latency windows.
func statsOf(title string, started time.Time, cur, rateBase, latBase *snapshot) Stats {
	st := Stats{
		Title:             title,
		TimeMS:            cur.at.UnixMilli(),
		UptimeS:           round(cur.at.Sub(started).Seconds(), 1),
		Connections:       cur.connections,
		InFlight:          cur.inflight,
		JobsTotal:         cur.jobs(),
		ResultsTotal:      cur.results,
		ErrorsTotal:       cur.errorsTotal(),
		EnqueuedTotal:     cur.enqueued,
		ExecutorsSeen:     cur.seen,
		QueueDepth:        cur.queueDepth,
		AckPending:        cur.ackPending,
		WaitingHostCap:    cur.waitHost,
		WaitingShare:      cur.waitShare,
		WaitingRate:       cur.waitRate,
		WaitingRetryAfter: cur.waitRetryAfter,
		HeldByReason:      cur.held,
		CircuitsOpen:      cur.circuitsOpen,
		RateTokens:        cur.rateTokens,
		OriginBacklog:     cur.backlog,
		ErrorsByCode:      cur.errors,
		DuplicatesTotal:   cur.duplicates,
		RedeliveriesTotal: cur.redeliveries,
		ExecutorJobsTotal: cur.execJobs,
		RPCCallsTotal:     cur.rpcCal,
	}
	if dt := cur.at.Sub(rateBase.at).Seconds(); dt > 0 {
		st.RateWindowS = round(dt, 1)
		st.JobsPerS = round(math.Max(0, cur.jobs()-rateBase.jobs())/dt, 1)
		st.RPCPerS = round(math.Max(0, cur.rpcCal-rateBase.rpcCal)/dt, 1)
	}
	st.LatencyWindowS = round(cur.at.Sub(latBase.at).Seconds(), 1)
	names := origin.Phases()
	known := len(names)
	for p := range cur.phases { // phases this build does not know, after the known ones
		if !contains(names, p) {
			names = append(names, p)
		}
	}
	sort.Strings(names[known:])
	for _, p := range names {
		h, ok := cur.phases[p]
		if !ok {
			continue
		}
		d := h.delta(latBase.phases[p])
		ps := PhaseStats{Phase: p, Count: d.count}
		if v, ok := d.quantile(0.50); ok {
			ps.P50MS = ptr(round(v*1000, 3))
		}
		if v, ok := d.quantile(0.99); ok {
			ps.P99MS = ptr(round(v*1000, 3))
		}
		st.Phases = append(st.Phases, ps)
	}
	return st
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ptr(v float64) *float64 { return &v }

// round rounds v to n decimals.
func round(v float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(v*p) / p
}
