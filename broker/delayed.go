package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Delayed jobs (start-fetch delay_ms, PROTOCOL.md §1.1) wait in the
// DelayedStream as JetStream message schedules: the origin stores the job
// as a schedule message ("Nats-Schedule: @at <time>") on
// Subjects.DelayedAt(origin, job), whose target is Subjects.DelayedDue(origin)
// in the same stream. At that time the server itself publishes the job on
// the due subject (and purges the schedule); the origin's due consumer
// (DueConsumerConfig) moves it into the jobs stream with the job's usual
// Nats-Msg-Id, so a move repeated after a crash stores it once. No timer of
// our own: a delayed job survives origin and server restarts in the stream.
//
// The stream is separate from the jobs stream because a stream with message
// schedules cannot refuse new messages when full (discard new), which is
// how the jobs stream answers queue_full, and allows roll-ups. Without auth
// every origin shares one DelayedStream (Provision); with nats.auth on each
// origin has its own in its own account (ProvisionDelayed at its start), so
// no origin can roll up or read another's schedules.

// DelayedStream is the stream delayed jobs wait in.
const DelayedStream = "PIPELINE_DELAYED"

// DelayedAt is the subject of job jobID's schedule message.
func (s Subjects) DelayedAt(originID, jobID string) string {
	return s.prefix() + ".delayed.at." + originID + "." + jobID
}

// DelayedDue is the subject the server publishes origin originID's delayed
// jobs on when they are due.
func (s Subjects) DelayedDue(originID string) string { return s.prefix() + ".delayed.due." + originID }

// DelayedWildcard matches every subject of the DelayedStream.
func (s Subjects) DelayedWildcard() string { return s.prefix() + ".delayed.>" }

// DueConsumer is the durable consumer through which origin originID moves
// its due jobs into the jobs stream.
func DueConsumer(originID string) string { return "due-" + originID }

// ProvisionDelayed creates or updates the DelayedStream in js's account,
// capped at MaxDelayedBytes (schedules beyond it push out the oldest, since
// a stream with schedules cannot refuse new messages; the jobs stream's
// MaxJobs still bounds what runs), remembering job ids for KeyWindow. A
// forming cluster's refusals (no peers for placement yet, no leader) are
// retried until ctx ends, as Provision does. It fails when the server
// refuses the stream (message schedules need nats-server 2.12 or later) or
// ctx ends first.
func ProvisionDelayed(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	return retryTransient(ctx, func(actx context.Context) error { return provisionDelayed(actx, js, cfg.withDefaults()) })
}

// provisionDelayed is one try of ProvisionDelayed.
func provisionDelayed(ctx context.Context, js jetstream.JetStream, c StreamsConfig) error {
	storage := jetstream.FileStorage
	if c.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              DelayedStream,
		Description:       "delayed fetch jobs: message schedules, moved to the jobs stream when due",
		Subjects:          []string{c.Subjects.DelayedWildcard()},
		Retention:         jetstream.WorkQueuePolicy,
		Discard:           jetstream.DiscardOld,
		MaxBytes:          c.MaxDelayedBytes,
		Storage:           storage,
		Replicas:          c.Replicas,
		Duplicates:        max(c.DuplicateWindow, c.KeyWindow),
		AllowMsgSchedules: true,
		AllowRollup:       true,
		AllowDirect:       true, // a restarted origin looks up a job's schedule
	})
	if err != nil {
		return fmt.Errorf("provision stream %s: %w", DelayedStream, err)
	}
	return nil
}

// DueConsumerConfig is origin originID's due consumer in the DelayedStream.
func DueConsumerConfig(s Subjects, originID string, replicas int) jetstream.ConsumerConfig {
	if replicas <= 0 {
		replicas = 1
	}
	return jetstream.ConsumerConfig{
		Durable:       DueConsumer(originID),
		Description:   "due delayed jobs of origin " + originID,
		FilterSubject: s.DelayedDue(originID),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       DefaultAckWait,
		MaxAckPending: 1000,
		Replicas:      replicas,
	}
}

// DelayedJobMsg is the schedule message that stores job data (the encoded
// job jobID of origin originID) until due, for the DelayedStream. Publish
// it with JetStream; its Nats-Msg-Id is JobMsgID, so a repeated store (a
// key, a retry) keeps the first.
func DelayedJobMsg(s Subjects, originID, jobID string, data []byte, due time.Time) *nats.Msg {
	m := nats.NewMsg(s.DelayedAt(originID, jobID))
	m.Data = data
	// RFC 3339 with the fraction: the server parses it (nats.go's
	// WithScheduleAt would round down to the second, firing early).
	m.Header.Set(jetstream.MsgIDHeader, JobMsgID(originID, jobID))
	m.Header.Set(jetstream.ScheduleHeader, "@at "+due.UTC().Format(time.RFC3339Nano))
	m.Header.Set(jetstream.ScheduleTargetHeader, s.DelayedDue(originID))
	return m
}
