package executor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
)

// Cluster-wide request rates per destination host.
//
// A host with rate R has one schedule shared by every executor process: the
// key broker.RateKey(host) of the KV bucket broker.RatesBucket holds T, the
// time (Unix ns) of the first request slot nobody has leased yet; slots are
// 1/R apart. An executor with jobs waiting for the host leases a batch of n
// slots with one compare-and-set: start = max(T, now − (burst−1)/R), T' =
// start + n/R, written only if T's revision is still the one it read (a
// conflict re-reads and tries again). Its jobs then each take one slot of
// the batch and wait, holding no executor slot, until their slot's time.
// Since slots never overlap across processes, all executors together send
// at most R per second (plus the burst after an idle spell), whatever their
// number; the KV round trip is paid once per batch (at most leaseSpan of
// the schedule, R/10 slots), not per fetch. A slot is used at its time or
// up to burst/R later, never later than that (it expires), so slots a
// process leased but could not use in time are lost, not saved up.
//
// Slots are leased at most leaseHorizon ahead of now, so a process that
// dies holding leased slots wastes at most leaseHorizon + leaseSpan of its
// hosts' schedules: the hosts see fewer requests for that long, never more.
// Clocks of executor hosts are assumed in sync (NTP): a process whose clock
// is off by d schedules its slots d early or late.

const (
	// leaseSpan is the most of a host's schedule one lease takes.
	leaseSpan = 100 * time.Millisecond
	// leaseHorizon is how far ahead of now slots may be leased.
	leaseHorizon = time.Second
	// leaseRetry is the pause after a KV failure before leasing again.
	leaseRetry = 250 * time.Millisecond
	// leaseTimeout bounds one lease (its KV round trips).
	leaseTimeout = 5 * time.Second
	// leaseTries bounds compare-and-set conflicts in one lease.
	leaseTries = 32
)

// errLeaseContended is returned when a lease lost leaseTries
// compare-and-set races in a row.
var errLeaseContended = errors.New("rate lease: too many concurrent updates")

// rateLimiter hands out request slots of rate-limited hosts, leased in
// batches from the shared schedule. It is safe for concurrent use.
type rateLimiter struct {
	kv  jetstream.KeyValue
	log zerolog.Logger
	m   *Metrics
	now func() time.Time

	ctx    context.Context // ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // pumps

	mu     sync.Mutex
	hosts  map[string]*hostRate // hosts with a rate (configured: a bounded set)
	closed bool
}

// hostRate is one host's schedule as this process sees it.
type hostRate struct {
	key      string
	interval int64 // ns between slots
	burst    int64
	batch    int

	// Under rateLimiter.mu:
	next, end int64 // leased, unassigned slots: next, next+interval, ... < end
	paused    int64 // leases start no earlier (Retry-After)
	waiters   []func(at time.Time)
	pumping   bool

	kvMu  sync.Mutex // one KV update of this host at a time
	known int64      // the schedule's value as last read or written (kvMu)
	rev   uint64     // its revision; 0: read it first (kvMu)
}

func newRateLimiter(kv jetstream.KeyValue, log zerolog.Logger, m *Metrics) *rateLimiter {
	ctx, cancel := context.WithCancel(context.Background())
	return &rateLimiter{kv: kv, log: log, m: m, now: time.Now, ctx: ctx, cancel: cancel,
		hosts: map[string]*hostRate{}}
}

// hostOf returns host's schedule state, made on first use. l.mu is held.
func (l *rateLimiter) hostOf(host string, d Destination) *hostRate {
	h := l.hosts[host]
	if h == nil {
		iv := int64(math.Max(1, float64(time.Second)/d.Rate))
		h = &hostRate{
			key: broker.RateKey(host), interval: iv, burst: int64(max(1, d.Burst)),
			batch: max(1, int(int64(leaseSpan)/iv)),
		}
		l.hosts[host] = h
	}
	return h
}

// expire drops h's leased slots that are too old to use: a slot may be
// used up to burst intervals late (the burst allowance), not later, or a
// process could send a batch of stale slots at once on top of the slots
// others use now. l.mu is held.
func (l *rateLimiter) expire(h *hostRate, now int64) {
	oldest := now - h.burst*h.interval
	if h.next >= oldest || h.next >= h.end {
		return
	}
	skip := min((oldest-h.next+h.interval-1)/h.interval, (h.end-h.next)/h.interval)
	h.next += skip * h.interval
	l.m.RateTokens(-int(skip))
}

// tryTake gives the caller a leased slot of host when this process has one
// and nobody waits for one before it; the caller then waits until at. It
// never blocks and makes no KV round trip.
func (l *rateLimiter) tryTake(host string, d Destination) (at time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hostOf(host, d)
	if len(h.waiters) > 0 {
		return time.Time{}, false
	}
	l.expire(h, l.now().UnixNano())
	if h.next >= h.end {
		return time.Time{}, false
	}
	a := h.next
	h.next += h.interval
	l.m.RateTokens(-1)
	return time.Unix(0, a), true
}

// take gives the caller a slot of host: either at once (got true; the
// caller waits until at), or later by calling give with the slot's time
// from another goroutine (got false), in the order of the calls. give must
// not block. After close, give is never called.
func (l *rateLimiter) take(host string, d Destination, give func(at time.Time)) (at time.Time, got bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hostOf(host, d)
	if len(h.waiters) == 0 {
		l.expire(h, l.now().UnixNano())
		if h.next < h.end {
			a := h.next
			h.next += h.interval
			l.m.RateTokens(-1)
			return time.Unix(0, a), true
		}
	}
	h.waiters = append(h.waiters, give)
	if !h.pumping && !l.closed {
		h.pumping = true
		l.wg.Add(1)
		go l.pump(h)
	}
	return time.Time{}, false
}

// pump leases slots for h's waiters and hands them out, until none wait.
func (l *rateLimiter) pump(h *hostRate) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		if l.closed {
			h.pumping = false
			h.waiters = nil
			l.mu.Unlock()
			return
		}
		var give []func(time.Time)
		var ats []int64
		l.expire(h, l.now().UnixNano())
		for len(h.waiters) > 0 && h.next < h.end {
			give = append(give, h.waiters[0])
			h.waiters[0] = nil
			h.waiters = h.waiters[1:]
			ats = append(ats, h.next)
			h.next += h.interval
		}
		l.m.RateTokens(-len(give))
		// A whole batch, not just what waits now: the next jobs then take
		// a slot without a KV round trip (tryTake). Slots nobody uses
		// expire; they only leave the host less than its rate.
		want := h.batch
		if len(h.waiters) == 0 {
			want = 0
			h.pumping = false
			h.waiters = nil
		}
		l.mu.Unlock()
		for i, g := range give {
			g(time.Unix(0, ats[i]))
		}
		if want == 0 {
			return
		}
		start, retryAt, err := l.lease(h, want)
		if err == nil && retryAt == 0 {
			l.mu.Lock()
			h.next, h.end = start, start+int64(want)*h.interval
			l.mu.Unlock()
			l.m.RateTokens(want)
			continue
		}
		wait := leaseRetry
		if err != nil {
			l.log.Warn().Err(err).Msg("cannot lease rate slots; retrying")
		} else {
			wait = time.Duration(retryAt - l.now().UnixNano())
		}
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-t.C:
		case <-l.ctx.Done():
			t.Stop()
		}
	}
}

// lease takes n slots of h's shared schedule. It returns the first slot's
// time, or, when the schedule is leased further ahead than leaseHorizon,
// the time to try again (retryAt, start 0).
func (l *rateLimiter) lease(h *hostRate, n int) (start, retryAt int64, err error) {
	h.kvMu.Lock()
	defer h.kvMu.Unlock()
	ctx, cancel := context.WithTimeout(l.ctx, leaseTimeout)
	defer cancel()
	for try := 0; try < leaseTries; try++ {
		if h.rev == 0 {
			if err := l.load(ctx, h); err != nil {
				return 0, 0, err
			}
			if h.rev == 0 {
				continue // created by another process meanwhile
			}
		}
		now := l.now().UnixNano()
		l.mu.Lock()
		paused := h.paused
		l.mu.Unlock()
		cur := max(h.known, now-(h.burst-1)*h.interval, paused)
		if cur > now+int64(leaseHorizon) {
			return 0, cur - int64(leaseHorizon), nil
		}
		nv := cur + int64(n)*h.interval
		rev, err := l.kv.Update(ctx, h.key, strconv.AppendInt(nil, nv, 10), h.rev)
		if err == nil {
			h.known, h.rev = nv, rev
			l.m.RateLeased(n)
			return cur, 0, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, 0, fmt.Errorf("rate lease %s: %w", h.key, err)
		}
		h.rev = 0 // another process leased: read the schedule again
	}
	return 0, 0, errLeaseContended
}

// load reads h's schedule from the KV (creating it when missing). kvMu is
// held. h.rev stays 0 when a create lost a race (read again).
func (l *rateLimiter) load(ctx context.Context, h *hostRate) error {
	e, err := l.kv.Get(ctx, h.key)
	switch {
	case err == nil:
		v, perr := strconv.ParseInt(string(e.Value()), 10, 64)
		if perr != nil {
			v = 0 // a foreign value: start the schedule from now
		}
		h.known, h.rev = v, e.Revision()
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, cerr := l.kv.Create(ctx, h.key, []byte("0"))
		if errors.Is(cerr, jetstream.ErrKeyExists) {
			return nil
		}
		if cerr != nil {
			return fmt.Errorf("rate schedule %s: create: %w", h.key, cerr)
		}
		h.known, h.rev = 0, rev
		return nil
	}
	return fmt.Errorf("rate schedule %s: read: %w", h.key, err)
}

// pause moves host's schedule to no earlier than until, in this process at
// once (its unassigned slots are dropped) and for every process through the
// KV, so the host's jobs everywhere wait out a Retry-After. Slots other
// processes leased before are still used. It gives up quietly (logged) on
// KV failures: the pause then holds in this process only.
func (l *rateLimiter) pause(host string, d Destination, until time.Time) {
	u := until.UnixNano()
	l.mu.Lock()
	h := l.hostOf(host, d)
	if u > h.paused {
		h.paused = u
	}
	if h.next < h.end {
		l.m.RateTokens(-int((h.end - h.next + h.interval - 1) / h.interval))
		h.next = h.end
	}
	l.mu.Unlock()

	h.kvMu.Lock()
	defer h.kvMu.Unlock()
	ctx, cancel := context.WithTimeout(l.ctx, leaseTimeout)
	defer cancel()
	for try := 0; try < leaseTries; try++ {
		if h.rev == 0 {
			if err := l.load(ctx, h); err != nil {
				l.log.Warn().Err(err).Msg("cannot pause the shared rate schedule")
				return
			}
			if h.rev == 0 {
				continue
			}
		}
		if h.known >= u {
			return
		}
		rev, err := l.kv.Update(ctx, h.key, strconv.AppendInt(nil, u, 10), h.rev)
		if err == nil {
			h.known, h.rev = u, rev
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			l.log.Warn().Err(err).Msg("cannot pause the shared rate schedule")
			return
		}
		h.rev = 0
	}
}

// close stops the pumps; waiting callers are never given a slot. The
// leased slots not handed out are lost (the schedule is not given back:
// other processes may have leased after them).
func (l *rateLimiter) close() {
	l.mu.Lock()
	l.closed = true
	for _, h := range l.hosts {
		if h.next < h.end {
			l.m.RateTokens(-int((h.end - h.next + h.interval - 1) / h.interval))
			h.next = h.end
		}
	}
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
}
