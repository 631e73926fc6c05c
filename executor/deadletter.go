package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// startDeadLetters consumes max-deliveries advisories (captured in a stream,
// shared by every executor) and, for each, moves the job to the dead-letter
// stream and stores a dead_letter error result for its origin, so the client
// gets exactly one final frame even for a job that crashed every executor
// that tried it.
func (e *Executor) startDeadLetters(ctx context.Context) (jetstream.ConsumeContext, error) {
	cons, err := e.js.Consumer(ctx, broker.AdvisoriesStream, broker.DeadLetterConsumer)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s: %w", broker.DeadLetterConsumer, err)
	}
	return cons.Consume(e.handleDeadLetter, append(broker.PullOptions(), jetstream.PullMaxMessages(16),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Debug().Err(err).Msg("dead-letter consume")
			}
		}))...)
}

func (e *Executor) handleDeadLetter(msg jetstream.Msg) {
	var adv broker.MaxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		e.log.Error().Err(err).Msg("undecodable max-deliveries advisory; dropping it")
		_ = msg.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	job, err := broker.MoveToDeadLetter(ctx, e.js, e.cfg.Subjects, adv)
	if err != nil {
		e.log.Warn().Err(err).Uint64("stream_seq", adv.StreamSeq).Msg("dead letter not stored; will retry")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if job == nil { // finished after all
		_ = msg.Ack()
		return
	}
	res := &broker.Result{
		JobID:      job.ID,
		Origin:     job.Origin,
		ClientID:   job.ClientID,
		Attempt:    int(adv.Deliveries),
		Executor:   e.cfg.ID,
		ReceivedAt: job.ReceivedAt,
		Error: &broker.Error{
			Code:    broker.CodeDeadLetter,
			Message: fmt.Sprintf("job failed after %d deliveries (executors crashed or timed out); kept in the dead-letter queue", adv.Deliveries),
		},
		Continuation: job.Continuation,
		DelayMS:      job.DelayMS,
	}
	if err := e.publish(res, false); err != nil { // small: no body
		e.m.PublishFailed()
		e.log.Warn().Err(err).Str("job", job.ID).Str("origin", job.Origin).Msg("dead_letter result not stored; will retry")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	e.m.DeadLetter()
	e.log.Warn().Str("job", job.ID).Str("origin", job.Origin).Uint64("deliveries", adv.Deliveries).Msg("job moved to dead-letter queue")
	_ = msg.Ack()
}
