package executor

import (
	"context"
	"math"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Bulk pacing.
//
// Large results (the bulk lane, broker.BulkResultBytes and up) are a
// scavenger class, as LEDBAT is for network transfers: they get the CPU that
// other work leaves. Storing and delivering a 1 MiB result takes a few
// milliseconds of CPU in the executor, the NATS server and the origin.
// Unpaced, a few clients' large fetches keep a small machine's CPUs busy,
// and every other client's small fetch then waits in the Go scheduler's run
// queues at each of its hops (README "Bounds per connection": p99 357-371 ms
// for a 14 ms fetch on 2 cores, 37 ms paced). Go has no goroutine priorities, so the pacer
// slows the bulk lane instead.
//
// It watches this process's scheduling latency (the runtime metric
// /sched/latencies:seconds: how long runnable goroutines wait for a CPU) and
// sets the rate of bulk result bytes this executor stores:
//   - halved (down to pacerFloor, so bulk results always move) after a
//     window whose mean latency is above the target;
//   - raised by a tenth after a window at or below the target in which a
//     bulk result waited, and no longer limited once that rate is above
//     pacerCeiling.
//
// The mean, not a high percentile, is the signal: a window holds a few
// hundred samples at most (the runtime samples one transition in eight),
// so its p99 is nearly its maximum, and one stray wait moves it. On the
// 2-core development box, in the never-reading-clients run, windows with a
// mean above 200 µs were 78% unpaced and 5% with the bulk lane held to 25
// MB/s per executor, where a bystander's p99 was 61 ms rather than 287 ms.
// Without large results the mean is 20-60 µs.
//
// Pacing applies only while there is small work to make room for: while
// this executor stored a small result within pacerSmallSpell. Large
// results alone go as fast as the CPU lets them.
//
// A window closes once it holds pacerMinSamples samples and pacerWindow has
// passed, so a nearly idle process, which records few samples, changes
// nothing. With `pipeline up` every role shares the one process, so the
// signal covers the origin and the NATS server too; an executor in its own
// process paces by its own load only.
const (
	pacerWindow     = 100 * time.Millisecond
	pacerMinSamples = 50
	pacerFloor      = 1 << 20 // bytes/s
	pacerCeiling    = 4 << 30 // bytes/s
	// pacerBurst is the most bytes let through at once; a result larger
	// than this waits as if it were this large.
	pacerBurst = 4 << 20
	// pacerSmallSpell is how long after this executor last stored a small
	// result the pacer still paces: with no small work to make room for,
	// large results go unpaced.
	pacerSmallSpell = 2 * time.Second
)

// schedLatency is the runtime metric the pacer reads.
const schedLatency = "/sched/latencies:seconds"

// pacer paces one executor's bulk results. wait is safe for concurrent use;
// run is the one goroutine that adjusts the rate.
type pacer struct {
	target time.Duration
	lim    *rate.Limiter // bytes per second; rate.Inf while unpaced
	m      *Metrics

	waited atomic.Bool  // a bulk result waited during the current window
	small  atomic.Int64 // when this executor last stored a small result (UnixNano)
	stored atomic.Int64 // bulk bytes let through in the current window

	sample  []metrics.Sample
	last    []uint64 // histogram counts at the last window's close
	lastAt  time.Time
	buckets []float64
}

// newPacer returns a pacer aiming at target, or nil (no pacing) for a
// target <= 0.
func newPacer(target time.Duration, m *Metrics) *pacer {
	if target <= 0 {
		return nil
	}
	return &pacer{
		target: target,
		lim:    rate.NewLimiter(rate.Inf, pacerBurst),
		m:      m,
		sample: []metrics.Sample{{Name: schedLatency}},
	}
}

// wait blocks until n more bulk bytes may be stored, or ctx ends (then it
// returns ctx's error and lets nothing through). It looks again at least
// every pacerWindow, so a raised rate applies to results already waiting.
// A nil pacer never waits.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p == nil {
		return nil
	}
	n = min(n, pacerBurst)
	var waited time.Duration
	defer func() { p.m.BulkPaced(waited) }()
	for {
		now := time.Now()
		if p.lim.AllowN(now, n) {
			p.stored.Add(int64(n))
			return nil
		}
		p.waited.Store(true)
		d := pacerWindow
		if r := float64(p.lim.Limit()); r > 0 {
			d = min(d, time.Duration((float64(n)-p.lim.TokensAt(now))/r*float64(time.Second)))
		}
		d = max(d, time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-t.C:
			waited += d
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// smallStored notes that a small result (not the bulk lane) was stored:
// there is small work to make room for. Safe on a nil pacer.
func (p *pacer) smallStored() {
	if p != nil {
		p.small.Store(time.Now().UnixNano())
	}
}

// run adjusts the rate every pacerWindow until stop is closed.
func (p *pacer) run(stop <-chan struct{}) {
	t := time.NewTicker(pacerWindow)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.tick(now)
		}
	}
}

// tick closes the current window if it has enough samples and sets the
// rate from its mean.
func (p *pacer) tick(now time.Time) {
	if now.Sub(time.Unix(0, p.small.Load())) > pacerSmallSpell {
		// No small result for a while: nothing to make room for.
		p.lim.SetLimitAt(now, rate.Inf)
		p.waited.Store(false)
		p.stored.Store(0)
		p.last = nil // the next window starts when small work does
		return
	}
	metrics.Read(p.sample)
	if p.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return // not this runtime's metric: pacing stays off
	}
	h := p.sample[0].Value.Float64Histogram()
	if p.last == nil {
		p.last, p.lastAt, p.buckets = append([]uint64(nil), h.Counts...), now, h.Buckets
		return
	}
	var n uint64
	for i, c := range h.Counts {
		n += c - p.last[i]
	}
	if n < pacerMinSamples {
		return
	}
	// The mean, taking each bucket's middle (its lower bound for the
	// last, open one).
	var sum float64
	for i, c := range h.Counts {
		lo, hi := max(p.buckets[i], 0), p.buckets[i+1]
		if math.IsInf(hi, 1) {
			hi = lo
		}
		sum += float64(c-p.last[i]) * (lo + hi) / 2
	}
	mean := time.Duration(sum / float64(n) * float64(time.Second))
	elapsed := now.Sub(p.lastAt)
	copy(p.last, h.Counts)
	p.lastAt = now
	stored := p.stored.Swap(0)
	waited := p.waited.Swap(false)
	cur := p.lim.Limit()
	switch {
	case mean > p.target:
		base := float64(cur)
		if cur == rate.Inf { // the rate bulk results went at, unpaced
			base = float64(stored) / elapsed.Seconds()
		}
		p.lim.SetLimitAt(now, rate.Limit(max(pacerFloor, base/2)))
	case waited && cur != rate.Inf:
		if next := float64(cur) * 1.1; next > pacerCeiling {
			p.lim.SetLimitAt(now, rate.Inf)
		} else {
			p.lim.SetLimitAt(now, rate.Limit(next))
		}
	}
}
