package origin

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// maxCanceled bounds the canceled jobs an origin remembers; beyond it the
// oldest are forgotten (a due job of theirs is still dropped unfetched by
// the executors, which follow the cancel marks).
const maxCanceled = 1 << 16

// cancels is the set of jobs this origin canceled (by job id), so a due
// delayed job that was canceled while it waited is not moved into the jobs
// stream. Bounded by maxCanceled. Safe for concurrent use.
type cancels struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
}

func (c *cancels) add(job string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.ids = make(map[string]struct{})
	}
	if _, ok := c.ids[job]; ok {
		return
	}
	c.ids[job] = struct{}{}
	c.order = append(c.order, job)
	if len(c.order) > maxCanceled {
		delete(c.ids, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *cancels) has(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[job]
	return ok
}

// cancel answers a cancel frame (PROTOCOL.md §1.1).
func (c *session) cancel(f *clientFrame) {
	job := f.target()
	if job == "" {
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeBadRequest, "cancel needs a job id or a key")))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.cfg.PublishTimeout)
	defer cancel()
	if werr := c.srv.cancelJob(ctx, job, func() {
		c.queue(mustJSON(canceledFrame{Type: frameCanceled, ID: f.ID, Job: job}))
	}); werr != nil {
		c.queue(encodeError(f.ID, job, werr))
	}
}

// cancelJob cancels job, which must have no final frame yet: it stores a
// cancel mark for the executors (broker.CancelsStream: a queued job is
// never fetched, a running fetch is aborted), removes a delayed job's
// schedule, calls reply, then ends the job with a canceled error as its
// final frame, to the connection that started it and every attached one,
// and in the finished-results store. It returns already_finished,
// not_found, or internal when the mark could not be stored (nothing is
// canceled then).
func (s *Server) cancelJob(ctx context.Context, job string, reply func()) *broker.Error {
	if res, err := s.finished.get(ctx, job); err == nil && res != nil {
		return broker.Errorf(broker.CodeAlreadyFinished, "job %q has finished", truncate(job, 64))
	}
	ref, owner, received, found := s.inflight.lookup(job)
	if !found {
		var ok bool
		if ref, ok = s.storedJob(ctx, job); !ok {
			return broker.Errorf(broker.CodeNotFound, "no job %q waiting or running on this origin", truncate(job, 64))
		}
	}
	var gen int64
	if broker.IsKeyJobID(job) && !received.IsZero() {
		gen = received.UnixNano()
	}
	if !s.dedup.begin(job, gen) {
		return broker.Errorf(broker.CodeAlreadyFinished, "job %q is finishing", truncate(job, 64))
	}
	state := s.jobState(ctx, ref)
	if _, err := s.js.Publish(ctx, s.cfg.Subjects.Cancel(s.cfg.ID, job), nil); err != nil {
		s.dedup.abort(job)
		s.log.Warn().Err(err).Str("job", job).Msg("cancel mark not stored; job not canceled")
		return broker.Errorf(broker.CodeInternal, "could not store the cancel; the job is not canceled")
	}
	s.cancels.add(job)
	if ref.scheduled {
		s.unschedule(ctx, job, ref.seq)
	}
	reply()
	msg := "canceled before it was fetched"
	if state == stateRunning {
		msg = "canceled while running: the request may already have reached the destination"
	}
	res := &broker.Result{
		JobID: job, Origin: s.cfg.ID, ReceivedAt: gen,
		Error:        broker.Errorf(broker.CodeCanceled, "%s", msg),
		Continuation: broker.Continuation{Name: ResultToClient},
	}
	data, _ := res.Encode()
	if s.finished.enabled() {
		s.finished.begin(job, data)
	}
	s.sessMu.Lock()
	sess := s.sessions[owner]
	s.sessMu.Unlock()
	if sess != nil {
		sess.deliver(res)
	}
	s.dedup.finish(job)
	s.finishJob(res)
	s.m.Canceled()
	s.log.Info().Str("job", job).Str("state", state).Msg("job canceled")
	if !s.finished.enabled() {
		return nil
	}
	// The canceled frame is the job's finished record, stored on its
	// result subject if it has none: of a cancel and a result racing, the
	// first stored wins.
	s.finished.begin(job, data)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.finished.stored(job) // after store's own window: no gap
		ctx, cancel := context.WithTimeout(s.bgCtx, s.cfg.PublishTimeout)
		defer cancel()
		stored, err := s.finished.store(ctx, s.js, res, data)
		switch {
		case err != nil:
			s.log.Warn().Err(err).Str("job", job).Msg("canceled record not stored; get-result will not find it")
		case !stored:
			s.log.Info().Str("job", job).Msg("the job's result was stored before its cancel: get-result answers the result")
		}
	}()
	return nil
}

// scheduledSeq looks for job's schedule in the delayed stream (a job
// delayed before this origin restarted) and returns its sequence.
func (s *Server) scheduledSeq(ctx context.Context, job string) (uint64, bool) {
	m, err := s.delayed.GetLastMsgForSubject(ctx, s.cfg.Subjects.DelayedAt(s.cfg.ID, job))
	if err != nil {
		return 0, false
	}
	return m.Sequence, true
}

// unschedule removes a canceled delayed job's schedule. If it fired
// meanwhile, the due job is dropped (cancels) or, once moved, acknowledged
// without a fetch by the executors (the cancel mark).
func (s *Server) unschedule(ctx context.Context, job string, seq uint64) {
	if err := s.delayed.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		s.log.Debug().Err(err).Str("job", job).Msg("schedule of a canceled job not removed; its cancel mark stops it")
	}
}
