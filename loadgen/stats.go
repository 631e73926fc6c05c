package loadgen

import (
	"sync"
	"time"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// stats accumulates the observations of one measured phase. It is safe for
// concurrent use: histograms lock themselves, the counters below share mu.
type stats struct {
	latency   *Histogram // end to end, client side
	enqueue   *Histogram // start-fetch sent → enqueued received
	execution *Histogram // enqueued received → result received

	// As reported by the origin in result frames' timing.
	originEnqueue *Histogram
	queue         *Histogram
	fetch         *Histogram
	total         *Histogram

	mu        sync.Mutex
	status    map[int]int64
	errors    map[string]int64
	samples   map[string]string // one message per error code
	unmatched map[string]int64  // error frames that named no fetch of ours
	timeline  []slice           // tick-wide slices of the phase
}

// slice is one timelineTick of a phase, by completion time.
type slice struct {
	ok, errs int64
	latSum   int64 // ns, over ok fetches
	latMax   int64 // ns
}

func newStats() *stats {
	return &stats{
		latency:       NewHistogram(),
		enqueue:       NewHistogram(),
		execution:     NewHistogram(),
		originEnqueue: NewHistogram(),
		queue:         NewHistogram(),
		fetch:         NewHistogram(),
		total:         NewHistogram(),
		status:        map[int]int64{},
		errors:        map[string]int64{},
		samples:       map[string]string{},
		unmatched:     map[string]int64{},
	}
}

// The timeline is kept in slices of timelineTick, fine enough to plot short
// runs; maxTimelineSlices bounds it (six hours), later completions count
// in the last slice.
const (
	timelineTick      = 100 * time.Millisecond
	maxTimelineSlices = int(6 * time.Hour / timelineTick)
)

// bucket returns the timeline entry for sinceStart; mu must be held.
func (st *stats) bucket(sinceStart int64) *slice {
	i := int(sinceStart / int64(timelineTick))
	i = min(max(i, 0), maxTimelineSlices-1)
	for len(st.timeline) <= i {
		st.timeline = append(st.timeline, slice{})
	}
	return &st.timeline[i]
}

// recordOK records a result frame. sinceStart places it on the timeline,
// lat is its end-to-end latency, sent/enq/now are the send, enqueued and
// result times (enq is 0 when no enqueued frame arrived).
func (st *stats) recordOK(sinceStart, lat, sent, enq, now int64, f *wire.Frame) {
	st.latency.Record(time.Duration(lat))
	if enq > 0 {
		st.enqueue.Record(time.Duration(enq - sent))
		st.execution.Record(time.Duration(now - enq))
	}
	if f.HasTiming {
		st.originEnqueue.RecordMillis(f.Timing.EnqueueMS)
		st.queue.RecordMillis(f.Timing.QueueMS)
		st.fetch.RecordMillis(f.Timing.FetchMS)
		st.total.RecordMillis(f.Timing.TotalMS)
	}
	st.mu.Lock()
	st.status[f.Status]++
	b := st.bucket(sinceStart)
	b.ok++
	b.latSum += lat
	b.latMax = max(b.latMax, lat)
	st.mu.Unlock()
}

// recordErr counts a failed fetch by code.
func (st *stats) recordErr(sinceStart int64, code, msg string) {
	st.mu.Lock()
	st.errors[code]++
	if _, ok := st.samples[code]; !ok && msg != "" {
		st.samples[code] = msg
	}
	st.bucket(sinceStart).errs++
	st.mu.Unlock()
}

// recordUnmatched counts an error frame that named no fetch of this run.
func (st *stats) recordUnmatched(code string) {
	if code == "" {
		code = "unknown"
	}
	st.mu.Lock()
	st.unmatched[code]++
	st.mu.Unlock()
}
