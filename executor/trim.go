package executor

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
)

// Every executor trims the results stream (broker.TrimResults): results stay
// there after their origin read them, as the jobs' finished records, until
// they are past the result retention. Trims of many executors overlap
// harmlessly (purges are idempotent); running one in every executor means
// no extra role to deploy, and the results stream is trimmed as long as any
// executor runs (executors are the ones that need room in it).

const (
	// trimMinGap is the shortest pause between two trims of one executor,
	// however often a full results stream asks for one.
	trimMinGap = time.Second
	// trimTimeout bounds one trim.
	trimTimeout = 10 * time.Second
	// trimWarnEvery is the longest a failing trim stays quiet: one warning
	// per this long at most.
	trimWarnEvery = time.Minute
)

// trimmer is an executor's results trimming loop; Start starts it,
// Shutdown stops it.
type trimmer struct {
	kick   chan struct{} // buffered 1: trim soon (the results stream is full)
	cancel context.CancelFunc
	done   chan struct{}
}

// kickTrim asks for a trim now (rate limited to one per trimMinGap): the
// results stream refused a result. It never blocks.
func (e *Executor) kickTrim() {
	select {
	case e.trim.kick <- struct{}{}:
	default:
	}
}

// startTrim starts the trim loop unless it runs. Called with e.mu held.
func (e *Executor) startTrim() {
	if e.trim.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.trim.cancel, e.trim.done = cancel, make(chan struct{})
	go e.trimLoop(ctx, e.trim.done)
}

// stopTrim stops the trim loop, if it runs, and waits for it to end.
func (e *Executor) stopTrim() {
	e.mu.Lock()
	cancel, done := e.trim.cancel, e.trim.done
	e.trim.cancel = nil
	e.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if done != nil {
		<-done
	}
}

// trimLoop trims every broker.TrimInterval, jittered so that executors
// started together do not trim in step, and soon after a kick. It also
// publishes the jobs stream's keeper every Config.JobsKeeperInterval.
func (e *Executor) trimLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	interval := broker.TrimInterval(e.cfg.Results)
	next := func() time.Duration { // interval +0..25 %: never below it
		return interval + rand.N(interval/4+1)
	}
	due := time.Now().Add(next())
	timer := time.NewTimer(time.Until(due))
	defer timer.Stop()
	var last, warned time.Time
	var keep <-chan time.Time // the jobs stream's keeper (keeper.go); nil: off
	var keepChecked bool
	if e.cfg.JobsKeeperInterval > 0 {
		keeper := time.NewTicker(e.cfg.JobsKeeperInterval)
		defer keeper.Stop()
		keep = keeper.C
		if !e.keepOnce(ctx, &keepChecked) {
			keep = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-keep:
			if !e.keepOnce(ctx, &keepChecked) {
				keep = nil
			}
			continue
		case <-e.trim.kick:
			if wait := trimMinGap - time.Since(last); wait > 0 {
				// Trimmed a moment ago: trim again once the gap is over,
				// unless the timer's own turn comes sooner.
				if time.Until(due) > wait {
					due = time.Now().Add(wait)
					timer.Reset(wait)
				}
				continue
			}
		case <-timer.C:
		}
		e.trimOnce(ctx, &warned)
		last = time.Now()
		due = last.Add(next())
		timer.Reset(time.Until(due))
	}
}

// trimOnce runs one trim and reports it: a debug line when it dropped
// anything, a warning (at most one per trimWarnEvery) when it failed.
func (e *Executor) trimOnce(ctx context.Context, warned *time.Time) {
	tctx, cancel := context.WithTimeout(ctx, trimTimeout)
	defer cancel()
	st, err := broker.TrimResults(tctx, e.js, e.cfg.Results, time.Now())
	e.m.Trimmed(st.Purged)
	if err != nil {
		if ctx.Err() == nil && time.Since(*warned) >= trimWarnEvery {
			*warned = time.Now()
			e.log.Warn().Err(err).Msg("trimming the results stream failed; retrying on the next turn")
		}
		return
	}
	if st.Purged > 0 {
		e.log.Debug().Uint64("purged", st.Purged).Bool("over_bytes", st.OverBytes).Strs("lagging_origins", st.Lagging).Msg("results stream trimmed")
	}
}
