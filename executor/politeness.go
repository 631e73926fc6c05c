package executor

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
)

// Destination politeness (issue #15): before a job takes an executor slot
// it may have to wait for its host, and after its fetch it may have to wait
// and run again:
//
//   - rate: the host has a rate (Config.Destinations); the job waits for
//     its slot of the host's cluster-wide schedule (ratelimit.go);
//   - retry_after: the host answered 429, or 503 with Retry-After; the job
//     waits that long and runs again, as do the host's other jobs in this
//     process (and, for a host with a rate, in every process: its schedule
//     is moved past the wait);
//   - circuit: the host's circuit is open (circuit.go); the job is not held
//     but ends at once with circuit_open.
//
// A waiting job is held here: it holds no executor slot and no host slot,
// and it is kept alive with in-progress acks, never nak'd, so waiting costs
// none of its deliveries and can never dead-letter it (Naks count toward
// MaxDeliver; in-progress acks do not). Its waits are capped in total by
// Config.RetryAfterMax for Retry-After (then the 429/503 is the result) and
// by the host's rate for rate waits. If the executor stops, held jobs are
// given back with a Nak delayed by their remaining wait (one delivery, as
// for any job an executor gives back when it stops); if it dies, the
// server redelivers them after AckWait.

// Wait reasons (label values of MetricWaiting and MetricHeldTotal).
const (
	// WaitRate: the job waits for its slot of its host's rate.
	WaitRate = "rate"
	// WaitRetryAfter: the job, or its host, waits out a Retry-After.
	WaitRetryAfter = "retry_after"
	// WaitCircuit: the job was refused at once by its host's open circuit
	// (MetricHeldTotal only: such jobs do not wait).
	WaitCircuit = "circuit"
)

// maxPauses bounds the hosts paused by Retry-After that a process keeps.
const maxPauses = 10_000

// taskPolite is a task's politeness state.
type taskPolite struct {
	host        string        // destination host:port, "" if none
	attempts    int           // requests sent
	waited      time.Duration // total time held
	retryWaited time.Duration // the Retry-After part of waited
	since       time.Time     // when the current hold began
	reason      string        // of the current hold
	slot        bool          // the current hold ends with a rate slot
	until       time.Time     // when the current timed hold ends
	timer       *time.Timer
	stopKeep    func()
	room        bool // holds a place in polite.room
}

// polite is an executor's politeness state. It is safe for concurrent use.
type polite struct {
	dests    destinations
	rates    *rateLimiter // nil: no host has a rate
	circuits *circuits    // nil: breaker off
	retryMax time.Duration

	npauses atomic.Int32 // len(paused), read without the lock
	pmu     sync.Mutex
	paused  map[string]time.Time // hosts waiting out a Retry-After

	mu     sync.Mutex
	held   map[*task]struct{}
	room   chan struct{} // a place per job held on arrival
	done   chan struct{} // closed by close
	closed bool
}

func newPolite(cfg Config, m *Metrics) *polite {
	p := &polite{
		dests:    newDestinations(cfg.Destinations),
		retryMax: cfg.RetryAfterMax,
		paused:   map[string]time.Time{},
		held:     map[*task]struct{}{},
		room:     make(chan struct{}, cfg.Concurrency*parkedPerSlot),
		done:     make(chan struct{}),
	}
	p.circuits = newCircuits(cfg.Circuit, m.circuitChanged)
	return p
}

// needsRates reports whether some destination has a rate.
func (p *polite) needsRates() bool {
	for _, d := range p.dests {
		if d.Rate > 0 {
			return true
		}
	}
	return false
}

// startPolite makes the rate limiter when a destination has a rate: it
// creates the shared rates bucket (replicated like the jobs stream) and
// fails if it cannot.
func (e *Executor) startPolite(ctx context.Context) error {
	if !e.pol.needsRates() {
		return nil
	}
	replicas := 1
	if st, err := e.js.Stream(ctx, broker.JobsStream); err == nil {
		replicas = st.CachedInfo().Config.Replicas
	}
	kv, err := broker.EnsureRates(ctx, e.js, replicas)
	if err != nil {
		return fmt.Errorf("executor.destinations has rates: %w", err)
	}
	e.pol.rates = newRateLimiter(kv, e.log.With().Str("part", "ratelimit").Logger(), e.m)
	return nil
}

// pausedUntil returns when host's Retry-After pause ends (zero: none).
func (p *polite) pausedUntil(host string) time.Time {
	if p.npauses.Load() == 0 {
		return time.Time{}
	}
	now := time.Now()
	p.pmu.Lock()
	defer p.pmu.Unlock()
	u, ok := p.paused[host]
	if ok && !u.After(now) {
		delete(p.paused, host)
		p.npauses.Add(-1)
		return time.Time{}
	}
	return u
}

// pause holds host's jobs in this process until until, and moves its
// shared schedule when it has a rate.
func (p *polite) pause(host string, until time.Time) {
	p.pmu.Lock()
	if u, ok := p.paused[host]; !ok {
		if len(p.paused) < maxPauses {
			p.paused[host] = until
			p.npauses.Add(1)
		}
	} else if until.After(u) {
		p.paused[host] = until
	}
	p.pmu.Unlock()
	if d, ok := p.dests.of(host); ok && d.Rate > 0 && p.rates != nil {
		p.rates.pause(host, d, until)
	}
}

// holdForHost decides, before t takes any slot, whether it must wait for
// its host. It returns true when t is held (it is admitted later, or given
// back at shutdown), false when t may go on now. It is called on the
// delivery goroutine of t's origin (and again from timers when a hold
// ends); it may block that goroutine while too many jobs are held, which
// slows that origin's intake only.
func (e *Executor) holdForHost(t *task) bool {
	p := e.pol
	if t.p.host == "" {
		t.p.host = t.host
	}
	host := t.p.host
	if host == "" {
		return false
	}
	if p.circuits.isOpen(host) {
		// Refused at once in fetchWithRetry: no waiting, not even for a
		// host slot.
		t.host = ""
		return false
	}
	if until := p.pausedUntil(host); !until.IsZero() {
		if !e.enterRoom(t) {
			return true // stopping: given back
		}
		e.hold(t, WaitRetryAfter, until, false)
		return true
	}
	d, ok := p.dests.of(host)
	if !ok || d.Rate <= 0 || p.rates == nil {
		return false
	}
	if at, ok := p.rates.tryTake(host, d); ok {
		if !at.After(time.Now()) {
			return false // a slot now: the common case under the rate
		}
		if !e.enterRoom(t) {
			return true
		}
		e.hold(t, WaitRate, at, true)
		return true
	}
	if !e.enterRoom(t) {
		return true
	}
	// Held first, so that the limiter's answer always finds it held.
	if !e.hold(t, WaitRate, time.Time{}, true) {
		return true
	}
	if at, got := p.rates.take(host, d, func(at time.Time) { e.slotGiven(t, at) }); got {
		e.slotGiven(t, at)
	}
	return true
}

// enterRoom takes a place among the held jobs for t (unless it has one),
// waiting for one while all are taken; it returns false, having given t
// back, if the executor stops meanwhile.
func (e *Executor) enterRoom(t *task) bool {
	p := e.pol
	if t.p.room {
		return true
	}
	select {
	case p.room <- struct{}{}:
	default:
		stop := e.keepAlive(t.msg, -1)
		select {
		case p.room <- struct{}{}:
			stop()
		case <-p.done:
			stop()
			_ = t.msg.Nak()
			return false
		}
	}
	t.p.room = true
	return true
}

func (e *Executor) leaveRoom(t *task) {
	if t.p.room {
		t.p.room = false
		<-e.pol.room
	}
}

// hold keeps t until until (or, when until is zero, until slotGiven),
// holding no slot, and returns true; after close it gives t back at once
// instead and returns false.
func (e *Executor) hold(t *task, reason string, until time.Time, slot bool) bool {
	p := e.pol
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		e.giveBack(t, until)
		return false
	}
	if t.p.stopKeep == nil {
		t.p.stopKeep = e.keepAlive(t.msg, -1)
	}
	p.held[t] = struct{}{}
	t.p.since, t.p.reason, t.p.slot, t.p.until = time.Now(), reason, slot, until
	e.m.Waiting(reason, 1)
	if !until.IsZero() {
		t.p.timer = time.AfterFunc(time.Until(until), func() { e.resume(t) })
	}
	return true
}

// slotGiven is the rate limiter's answer for a held t: its slot's time.
func (e *Executor) slotGiven(t *task, at time.Time) {
	p := e.pol
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.held[t]; !ok {
		return // given back at shutdown
	}
	t.p.until = at
	t.p.timer = time.AfterFunc(time.Until(at), func() { e.resume(t) })
}

// resume ends t's hold: a job that has its rate slot (and whose host is not
// paused) is admitted; any other goes through holdForHost again.
func (e *Executor) resume(t *task) {
	p := e.pol
	p.mu.Lock()
	if _, ok := p.held[t]; !ok {
		p.mu.Unlock()
		return
	}
	delete(p.held, t)
	t.p.timer = nil
	w := time.Since(t.p.since)
	t.p.waited += w
	e.m.Waiting(t.p.reason, -1)
	if w >= time.Millisecond {
		e.m.Held(t.p.reason) // a wait worth counting (a free rate slot is not)
		if t.p.reason == WaitRate {
			e.m.hostEvent(t.p.host, hostRateWait)
		}
	}
	slot := t.p.slot
	p.mu.Unlock()

	if slot && p.pausedUntil(t.p.host).IsZero() {
		e.admitHeld(t)
		return
	}
	if !e.holdForHost(t) {
		e.admitHeld(t)
	}
}

// admitHeld admits a job whose hold ended: its keep-alive and its place in
// the room go, and it takes its host and executor slots like a new job.
func (e *Executor) admitHeld(t *task) {
	p := e.pol
	p.mu.Lock()
	if p.closed { // stopping: hand it back rather than start work
		e.giveBack(t, time.Time{})
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if t.p.stopKeep != nil {
		t.p.stopKeep()
		t.p.stopKeep = nil
	}
	e.leaveRoom(t)
	e.admit(t)
}

// giveBack returns a held job to JetStream for another executor, delayed
// by what is left of its wait. p.mu is held.
func (e *Executor) giveBack(t *task, until time.Time) {
	if t.p.stopKeep != nil {
		t.p.stopKeep()
		t.p.stopKeep = nil
	}
	if t.p.room {
		t.p.room = false
		<-e.pol.room
	}
	if d := time.Until(until); d > 0 {
		_ = t.msg.NakWithDelay(d)
	} else {
		_ = t.msg.Nak()
	}
}

// closePolite gives every held job back and stops the rate limiter.
func (e *Executor) closePolite() {
	p := e.pol
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	for t := range p.held {
		if t.p.timer != nil {
			t.p.timer.Stop()
		}
		delete(p.held, t)
		e.m.Waiting(t.p.reason, -1)
		e.giveBack(t, t.p.until)
	}
	p.mu.Unlock()
	if p.rates != nil {
		p.rates.close()
	}
}

// waitRetryAfter handles a response asking the job to come back later: a
// 429, or a 503 with Retry-After. Within Config.RetryAfterMax (in total
// for the job) it pauses the host, holds t for the wait and returns true;
// t runs again then. Otherwise it returns false and the response is the
// result.
func (e *Executor) waitRetryAfter(t *task, resp *Response) bool {
	if resp == nil || t.p.host == "" {
		return false
	}
	now := time.Now()
	d, ok := retryAfterOf(resp, now)
	if !ok {
		return false
	}
	e.m.hostEvent(t.p.host, hostRetryAfter)
	if t.p.retryWaited+d > e.pol.retryMax {
		return false
	}
	until := now.Add(d)
	e.pol.pause(t.p.host, until)
	t.p.retryWaited += d
	t.log.Debug().Int("status", resp.Status).Dur("retry_after", d).Msg("destination asks to retry later; waiting")
	e.hold(t, WaitRetryAfter, until, false)
	return true
}

// defaultRetryAfter is the wait for a 429 without (a valid) Retry-After.
const defaultRetryAfter = time.Second

// retryAfterOf returns how long a 429, or a 503 carrying Retry-After, asks
// to wait: Retry-After in seconds or as an HTTP-date (a date in the past
// means 0), defaultRetryAfter for a 429 without a usable one.
func retryAfterOf(resp *Response, now time.Time) (time.Duration, bool) {
	if resp.Status != http.StatusTooManyRequests && resp.Status != http.StatusServiceUnavailable {
		return 0, false
	}
	d, ok := parseRetryAfter(resp.Headers["retry-after"], now)
	if !ok {
		if resp.Status == http.StatusTooManyRequests {
			return defaultRetryAfter, true
		}
		return 0, false
	}
	return d, true
}

// parseRetryAfter parses a Retry-After value (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(0, at.Sub(now)), true
}
