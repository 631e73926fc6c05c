package loadgen

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record microseconds from 1 µs to 10 minutes with three
// significant digits, enough for sub-millisecond RPC and multi-second fetches.
const (
	histMinMicros = 1
	histMaxMicros = int64(10 * time.Minute / time.Microsecond)
	histSigFigs   = 3
)

// LatencySummary is the `latency_ms` object of PROTOCOL.md §5: percentiles in
// milliseconds.
type LatencySummary struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Histogram is an HDR latency histogram safe for concurrent use by multiple
// goroutines. Values outside the trackable range are clamped, never dropped.
type Histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)}
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < histMinMicros {
		us = histMinMicros
	}
	if us > histMaxMicros {
		us = histMaxMicros
	}
	h.mu.Lock()
	_ = h.h.RecordValue(us) // cannot fail: the value is clamped into range
	h.mu.Unlock()
}

// RecordMillis adds one observation given in (fractional) milliseconds, the
// unit used by result frames' timing fields.
func (h *Histogram) RecordMillis(ms float64) {
	h.Record(time.Duration(ms * float64(time.Millisecond)))
}

// Merge adds every observation of other into h.
func (h *Histogram) Merge(other *Histogram) {
	other.mu.Lock()
	snap := hdrhistogram.Import(other.h.Export())
	other.mu.Unlock()
	h.mu.Lock()
	h.h.Merge(snap)
	h.mu.Unlock()
}

// Count is the number of observations.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.TotalCount()
}

// Quantile returns the value at percentile q (0..100) in milliseconds.
func (h *Histogram) Quantile(q float64) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return usToMs(h.h.ValueAtQuantile(q))
}

// Summary returns p50/p95/p99/p99.9/max/mean in milliseconds. An empty
// histogram gives all zeros.
func (h *Histogram) Summary() LatencySummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return LatencySummary{}
	}
	return LatencySummary{
		P50:  usToMs(h.h.ValueAtQuantile(50)),
		P95:  usToMs(h.h.ValueAtQuantile(95)),
		P99:  usToMs(h.h.ValueAtQuantile(99)),
		P999: usToMs(h.h.ValueAtQuantile(99.9)),
		Max:  usToMs(h.h.Max()),
		Mean: h.h.Mean() / 1000,
	}
}

// Distribution returns the recorded values as (value ms, cumulative fraction)
// points, suitable for drawing a CDF.
func (h *Histogram) Distribution() [][2]float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	total := h.h.TotalCount()
	if total == 0 {
		return nil
	}
	var pts [][2]float64
	var seen int64
	for _, b := range h.h.Distribution() {
		if b.Count == 0 {
			continue
		}
		seen += b.Count
		pts = append(pts, [2]float64{usToMs(b.To), float64(seen) / float64(total)})
	}
	return pts
}

func usToMs(us int64) float64 { return float64(us) / 1000 }
