package executor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// Fair share across origins.
//
// Every origin has its own durable jobs consumer (broker.JobsConsumer,
// filtered on its job subject), shared by all executors. An executor pulls
// from every origin that has stored jobs, each through its own consume loop
// with a small prefetch, and every loop hands its jobs to the executor's one
// pool of Concurrency slots. A loop that finds the pool full waits for a
// slot, and waiting loops are served in arrival order (a Go channel's
// senders queue FIFO), so with N origins waiting each gets one slot in N as
// slots free up, whatever the depth of its backlog: an origin with 50,000
// queued jobs holds at most one waiting delivery (plus its prefetch) at a
// time, not the head of one shared line.
//
// Origins are found three ways: the consumer-created advisory of the jobs
// stream (an origin creates its consumer when it starts: executors follow it
// at once), and every DiscoverInterval the jobs stream's per-subject message
// counts (jobs stored by an origin that is gone, or whose idle consumer the
// server deleted) and the list of jobs consumers. An executor stops pulling
// from an origin whose subject has held no job for the template's idle time;
// the server then deletes the idle consumer (InactiveThreshold).

// discoverTimeout bounds one discovery round's requests.
const discoverTimeout = 5 * time.Second

// originPull is this executor's pull from one origin's jobs consumer.
type originPull struct {
	cc       jetstream.ConsumeContext
	lastSeen time.Time // last time the origin had jobs stored (or the pull started)
}

// origins tracks the origins this executor pulls from. Its methods are
// called from the discovery goroutine only, except stopAll (Shutdown).
type origins struct {
	mu       sync.Mutex
	pulls    map[string]*originPull
	idle     map[string]struct{} // origins no longer pulled for lack of jobs
	draining []jetstream.ConsumeContext
	stopped  bool
}

// startOrigins finds the origins with a jobs consumer or stored jobs and
// starts pulling from them, then keeps following origins as they come and
// go until Shutdown.
func (e *Executor) startOrigins(ctx context.Context) error {
	st, err := e.js.Stream(ctx, broker.JobsStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", broker.JobsStream, err)
	}
	tmpl, err := broker.JobsTemplateOf(st.CachedInfo().Config)
	if err != nil {
		return err
	}
	e.stream, e.tmpl = st, tmpl
	e.ackWait = tmpl.AckWait
	e.wake = make(chan string, 64)
	sub, err := e.nc.Subscribe(broker.JobsConsumerCreatedSubject(), func(m *nats.Msg) {
		name := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		if o, ok := broker.JobsConsumerOrigin(name); ok {
			select {
			case e.wake <- o:
			default: // the next discovery round finds it
			}
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", broker.JobsConsumerCreatedSubject(), err)
	}
	e.advSub = sub
	if err := e.discover(ctx); err != nil {
		// Some origin could not be followed: the next round retries.
		e.log.Warn().Err(err).Msg("origin discovery")
	}
	e.discoverDone = make(chan struct{})
	e.discoverStop = make(chan struct{})
	go e.discoverLoop()
	return nil
}

func (e *Executor) discoverLoop() {
	defer close(e.discoverDone)
	t := time.NewTicker(e.cfg.DiscoverInterval)
	defer t.Stop()
	for {
		select {
		case <-e.discoverStop:
			return
		case o := <-e.wake:
			ctx, cancel := context.WithTimeout(context.Background(), discoverTimeout)
			if err := e.follow(ctx, o); err != nil {
				e.log.Warn().Err(err).Str("origin", o).Msg("cannot pull jobs of new origin; retrying at the next discovery")
			}
			cancel()
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), discoverTimeout)
			if err := e.discover(ctx); err != nil {
				e.log.Warn().Err(err).Msg("origin discovery")
			}
			cancel()
		}
	}
}

// discover reads which origins have stored jobs or a jobs consumer, starts
// pulling from the new ones and stops pulling from those idle for the
// template's idle time.
func (e *Executor) discover(ctx context.Context) error {
	info, err := e.stream.Info(ctx, jetstream.WithSubjectFilter(e.cfg.Subjects.Job("*")))
	if err != nil {
		return fmt.Errorf("discover origins: stream info: %w", err)
	}
	if t, err := broker.JobsTemplateOf(info.Config); err == nil {
		e.tmpl = t // re-provisioned: new consumers take the new template
	}
	backlog := make(map[string]uint64, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		if o, ok := e.cfg.Subjects.JobOrigin(subj); ok && n > 0 {
			backlog[o] = n
		}
	}
	names := e.stream.ConsumerNames(ctx)
	withConsumer := map[string]bool{}
	for name := range names.Name() {
		if o, ok := broker.JobsConsumerOrigin(name); ok {
			withConsumer[o] = true
		}
	}
	var errs []error
	if err := names.Err(); err != nil {
		errs = append(errs, fmt.Errorf("discover origins: consumer names: %w", err))
	}
	now := time.Now()
	e.orig.mu.Lock()
	// Forget pulls that have finished draining, and idle origins whose
	// consumer the server has deleted.
	live := e.orig.draining[:0]
	for _, cc := range e.orig.draining {
		select {
		case <-cc.Closed():
		default:
			live = append(live, cc)
		}
	}
	e.orig.draining = live
	for o := range e.orig.idle {
		if !withConsumer[o] {
			delete(e.orig.idle, o)
		}
	}
	var idle []string
	for o, p := range e.orig.pulls {
		if backlog[o] > 0 {
			p.lastSeen = now
		} else if now.Sub(p.lastSeen) >= e.tmpl.Idle {
			idle = append(idle, o)
		}
	}
	e.orig.mu.Unlock()
	for _, o := range idle {
		e.unfollow(o)
	}
	want := make([]string, 0, len(backlog)+len(withConsumer))
	for o := range backlog {
		want = append(want, o)
	}
	for o := range withConsumer {
		if backlog[o] == 0 {
			want = append(want, o)
		}
	}
	sort.Strings(want)
	for _, o := range want {
		if backlog[o] == 0 && e.wasIdle(o) {
			continue // its consumer outlives our pull by the idle time
		}
		if err := e.follow(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	e.m.Backlog(backlog)
	return errors.Join(errs...)
}

// wasIdle reports whether this executor stopped pulling from origin o for
// lack of jobs (and o has none since).
func (e *Executor) wasIdle(o string) bool {
	e.orig.mu.Lock()
	defer e.orig.mu.Unlock()
	_, ok := e.orig.idle[o]
	return ok
}

// follow starts pulling from origin o's jobs consumer, creating it from the
// template if needed. It does nothing when this executor pulls from o
// already (whose idle clock only stored jobs reset).
func (e *Executor) follow(ctx context.Context, o string) error {
	e.orig.mu.Lock()
	if e.orig.stopped {
		e.orig.mu.Unlock()
		return nil
	}
	if _, ok := e.orig.pulls[o]; ok {
		e.orig.mu.Unlock()
		return nil
	}
	delete(e.orig.idle, o)
	others := len(e.orig.pulls)
	e.orig.mu.Unlock()

	cons, err := broker.EnsureJobsConsumerFrom(ctx, e.stream, e.tmpl, e.cfg.Subjects, o)
	if err != nil {
		return fmt.Errorf("follow origin %s: %w", o, err)
	}
	cc, err := cons.Consume(e.handle, append(broker.PullOptions(),
		jetstream.PullMaxMessages(e.prefetch(others)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Debug().Err(err).Str("origin", o).Msg("consume")
			}
		}))...)
	if err != nil {
		return fmt.Errorf("follow origin %s: consume: %w", o, err)
	}
	e.orig.mu.Lock()
	defer e.orig.mu.Unlock()
	if e.orig.stopped {
		cc.Drain()
		e.orig.draining = append(e.orig.draining, cc)
		return nil
	}
	e.orig.pulls[o] = &originPull{cc: cc, lastSeen: time.Now()}
	e.log.Debug().Str("origin", o).Msg("pulling jobs of origin")
	return nil
}

// unfollow stops pulling from origin o; its buffered jobs (if one arrived
// since the last look) are still handled.
func (e *Executor) unfollow(o string) {
	e.orig.mu.Lock()
	defer e.orig.mu.Unlock()
	p, ok := e.orig.pulls[o]
	if !ok {
		return
	}
	delete(e.orig.pulls, o)
	e.orig.idle[o] = struct{}{}
	p.cc.Drain()
	e.orig.draining = append(e.orig.draining, p.cc)
	e.log.Debug().Str("origin", o).Msg("origin idle; no longer pulling its jobs")
}

// prefetch is how many jobs the pull of an origin followed after others
// keeps buffered: Concurrency for the first origin (one busy origin is
// pulled exactly as fast as one shared consumer was), then Concurrency/2,
// /3, ... at least 8, so that the jobs buffered by this executor (held by
// it, their AckWait running) stay near Concurrency × ln(origins) however
// many origins there are. A buffer does not widen an origin's share: every
// delivery still waits its turn for a slot.
func (e *Executor) prefetch(others int) int {
	return max(8, e.cfg.Concurrency/(others+1))
}

// stopOrigins stops discovery and drains every pull: no new jobs are
// pulled once it returns, jobs already buffered are still delivered
// (waitDrained waits for them).
func (e *Executor) stopOrigins() {
	e.orig.mu.Lock()
	again := e.orig.stopped
	e.orig.stopped = true
	e.orig.mu.Unlock()
	if again { // a second Shutdown
		return
	}
	if e.discoverStop != nil {
		close(e.discoverStop)
		<-e.discoverDone
	}
	if e.advSub != nil {
		_ = e.advSub.Unsubscribe()
	}
	e.orig.mu.Lock()
	all := e.orig.draining
	for _, p := range e.orig.pulls {
		p.cc.Drain()
		all = append(all, p.cc)
	}
	e.orig.pulls = map[string]*originPull{}
	e.orig.draining = nil
	e.orig.mu.Unlock()
	e.drained = all
}

// waitDrained waits until the pulls stopOrigins drained have closed, or ctx
// ends.
func (e *Executor) waitDrained(ctx context.Context) {
	for _, cc := range e.drained {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			return
		}
	}
}
