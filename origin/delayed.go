package origin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// startMover starts moving this origin's due delayed jobs into the jobs
// stream (broker.DelayedStream describes the path). A due job is published
// with its usual Nats-Msg-Id, so a move repeated after a crash between the
// publish and the ack stores it once; a full jobs stream leaves it waiting
// in the delayed stream and tries again a second later.
func (s *Server) startMover(ctx context.Context) error {
	st, err := s.js.Stream(ctx, broker.DelayedStream)
	if err != nil {
		return fmt.Errorf("origin %s: delayed-jobs stream: %w", s.cfg.ID, err)
	}
	s.delayed = st
	cons, err := st.CreateOrUpdateConsumer(ctx, broker.DueConsumerConfig(s.cfg.Subjects, s.cfg.ID, s.cfg.Replicas))
	if err != nil {
		return fmt.Errorf("origin %s: due consumer: %w", s.cfg.ID, err)
	}
	cc, err := cons.Consume(s.onDue, append(broker.PullOptions(), jetstream.PullMaxMessages(256),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				s.log.Debug().Err(err).Msg("due jobs consume")
			}
		}))...)
	if err != nil {
		return fmt.Errorf("origin %s: consume due jobs: %w", s.cfg.ID, err)
	}
	s.dueCC = cc
	return nil
}

// onDue moves one due job into the jobs stream.
func (s *Server) onDue(msg jetstream.Msg) {
	job, err := broker.DecodeJob(msg.Data())
	if err != nil {
		s.log.Error().Err(err).Msg("undecodable delayed job; dropping it")
		_ = msg.Term()
		return
	}
	if s.cancels.has(job.ID) {
		_ = msg.Ack()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	ack, err := s.js.Publish(ctx, s.cfg.Subjects.Job(s.cfg.ID), msg.Data(), jetstream.WithMsgID(broker.JobMsgID(s.cfg.ID, job.ID)))
	if err != nil {
		lvl := s.log.Warn()
		if broker.CodeOf(err) == broker.CodeQueueFull {
			lvl = s.log.Debug()
		}
		lvl.Err(err).Str("job", job.ID).Msg("due job not moved to the jobs stream yet; trying again")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	s.inflight.stored(job.ID, ack.Sequence, false)
	_ = msg.Ack()
}

// delayedFull reports whether storing a delayed job of size bytes would
// fill the delayed-jobs stream past 90%. The stream's size is looked up at
// most once a second and the jobs stored since are added to it. A stream
// with message schedules cannot refuse new messages (it drops its oldest),
// so the origin refuses delayed jobs itself (queue_full) before that can
// happen. A failed lookup counts as not full.
func (s *Server) delayedFull(now time.Time, size int) bool {
	s.delayMu.Lock()
	if now.Sub(s.delayChecked) >= time.Second {
		s.delayChecked = now
		s.delayMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
		var used, limit int64
		if st, err := s.js.Stream(ctx, broker.DelayedStream); err == nil {
			info := st.CachedInfo()
			used, limit = int64(info.State.Bytes), info.Config.MaxBytes
		}
		cancel()
		s.delayMu.Lock()
		s.delayUsed, s.delayLimit = used, limit
	}
	defer s.delayMu.Unlock()
	if s.delayLimit <= 0 {
		return false
	}
	if (s.delayUsed+int64(size))*10 >= s.delayLimit*9 {
		return true
	}
	s.delayUsed += int64(size)
	return false
}
