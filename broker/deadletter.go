package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Dead-letter plumbing. JetStream has no native dead-letter queue: when a job
// exhausts MaxDeliver the server publishes a MAX_DELIVERIES advisory (core
// NATS, once) and leaves the message in the jobs stream. AdvisoriesStream
// captures those advisories so none is lost while no executor runs; an
// executor's dead-letter processor moves each job into DeadLetterStream,
// tells the origin (a dead_letter error result) and deletes the original.
const (
	// AdvisoriesStream captures max-deliveries advisories of the jobs consumers.
	AdvisoriesStream = "PIPELINE_ADVISORIES"
	// DeadLetterStream keeps dead jobs for operators to list and replay.
	DeadLetterStream = "PIPELINE_DLQ"
	// DeadLetterConsumer is the durable consumer dead-letter processors share.
	DeadLetterConsumer = "deadletters"
)

// Header names on dead-letter messages.
const (
	HeaderDeadSeq        = "Pipeline-Jobs-Seq"
	HeaderDeadDeliveries = "Pipeline-Deliveries"
	HeaderDeadAt         = "Pipeline-Dead-At"
)

// MaxDeliveriesSubject is the advisory subject for every consumer of the
// jobs stream (one per origin, see JobsConsumer).
func MaxDeliveriesSubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + JobsStream + ".*"
}

// JobsConsumerCreatedSubject is the advisory subject the server publishes
// on when a consumer of the jobs stream is created: executors listen to it
// to start pulling from a new origin at once.
func JobsConsumerCreatedSubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.CREATED." + JobsStream + ".*"
}

// DeadLetter is the dead-letter subject for origin originID's jobs.
func (s Subjects) DeadLetter(originID string) string { return s.prefix() + ".dlq." + originID }

// DeadLetterWildcard matches every dead-letter subject.
func (s Subjects) DeadLetterWildcard() string { return s.prefix() + ".dlq.>" }

func provisionDeadLetters(ctx context.Context, js jetstream.JetStream, c StreamsConfig, storage jetstream.StorageType) error {
	adv := jetstream.StreamConfig{
		Name:        AdvisoriesStream,
		Description: "max-deliveries advisories of the jobs consumers",
		Subjects:    []string{MaxDeliveriesSubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     storage,
		Replicas:    c.Replicas,
		MaxAge:      7 * 24 * time.Hour,
	}
	if _, err := js.CreateOrUpdateStream(ctx, adv); err != nil {
		return fmt.Errorf("provision stream %s: %w", AdvisoriesStream, err)
	}
	dlq := jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "jobs that exhausted their deliveries; list and replay with `pipeline dlq`",
		Subjects:    []string{c.Subjects.DeadLetterWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    c.Replicas,
		MaxAge:      c.DeadLetterMaxAge,
		Duplicates:  c.DuplicateWindow,
	}
	if _, err := js.CreateOrUpdateStream(ctx, dlq); err != nil {
		return fmt.Errorf("provision stream %s: %w", DeadLetterStream, err)
	}
	cons := jetstream.ConsumerConfig{
		Durable:    DeadLetterConsumer,
		AckPolicy:  jetstream.AckExplicitPolicy,
		AckWait:    DefaultAckWait,
		MaxDeliver: -1,
		Replicas:   c.Replicas,
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, AdvisoriesStream, cons); err != nil {
		return fmt.Errorf("provision consumer %s: %w", DeadLetterConsumer, err)
	}
	return nil
}

// MaxDeliveriesAdvisory is the part of the server's advisory we use.
type MaxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// DeadLetterEntry is one job in the dead-letter stream.
type DeadLetterEntry struct {
	// Seq is the entry's sequence in DeadLetterStream (what replay takes).
	Seq        uint64
	Job        *Job
	Deliveries int
	DeadAt     time.Time
}

// ErrNotDead is returned when a dead-letter sequence does not exist.
var ErrNotDead = errors.New("broker: no such dead letter")

// MoveToDeadLetter stores the job found at jobsSeq in the dead-letter stream
// and deletes it from the jobs stream. It returns the job (nil, nil when the
// job is gone already, e.g. it was acknowledged after all).
func MoveToDeadLetter(ctx context.Context, js jetstream.JetStream, s Subjects, adv MaxDeliveriesAdvisory) (*Job, error) {
	jobs, err := js.Stream(ctx, JobsStream)
	if err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	raw, err := jobs.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter: get job seq %d: %w", adv.StreamSeq, err)
	}
	// The origin is the one the subject names (permissions control
	// subjects), whatever the body says.
	origin, ok := s.JobOrigin(raw.Subject)
	if !ok {
		origin = "unknown"
	}
	job, err := DecodeJob(raw.Data)
	if err != nil {
		// Undecodable: keep the bytes anyway.
		job = &Job{ID: "seq-" + strconv.FormatUint(adv.StreamSeq, 10)}
	}
	job.Origin = origin
	msg := nats.NewMsg(s.DeadLetter(job.Origin))
	msg.Data = raw.Data
	msg.Header.Set(HeaderDeadSeq, strconv.FormatUint(adv.StreamSeq, 10))
	msg.Header.Set(HeaderDeadDeliveries, strconv.FormatUint(adv.Deliveries, 10))
	msg.Header.Set(HeaderDeadAt, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("dlq-"+job.ID)); err != nil {
		return nil, fmt.Errorf("dead letter: store job %s: %w", job.ID, err)
	}
	if err := jobs.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return job, fmt.Errorf("dead letter: delete job seq %d: %w", adv.StreamSeq, err)
	}
	return job, nil
}

// ListDeadLetters returns up to limit entries of the dead-letter stream,
// oldest first.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetterEntry, error) {
	st, err := js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []DeadLetterEntry
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0 && len(out) < limit; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("list dead letters: seq %d: %w", seq, err)
		}
		out = append(out, deadEntry(raw))
	}
	return out, nil
}

func deadEntry(raw *jetstream.RawStreamMsg) DeadLetterEntry {
	e := DeadLetterEntry{Seq: raw.Sequence}
	if j, err := DecodeJob(raw.Data); err == nil {
		e.Job = j
	}
	e.Deliveries, _ = strconv.Atoi(raw.Header.Get(HeaderDeadDeliveries))
	e.DeadAt, _ = time.Parse(time.RFC3339Nano, raw.Header.Get(HeaderDeadAt))
	return e
}

// ReplayDeadLetter re-enqueues the dead job at dlqSeq under a new job id
// (the old id's result was already reported as dead_letter) and removes it
// from the dead-letter stream. Its result reaches the origin like any other;
// the default continuation keeps it for get-result under the new id.
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, s Subjects, dlqSeq uint64) (string, error) {
	st, err := js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return "", fmt.Errorf("replay dead letter: %w", err)
	}
	raw, err := st.GetMsg(ctx, dlqSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", fmt.Errorf("replay dead letter %d: %w", dlqSeq, ErrNotDead)
	}
	if err != nil {
		return "", fmt.Errorf("replay dead letter %d: %w", dlqSeq, err)
	}
	job, err := DecodeJob(raw.Data)
	if err != nil {
		return "", fmt.Errorf("replay dead letter %d: %w", dlqSeq, err)
	}
	job.ID = job.ID + "-r" + nuid.Next()[18:]
	job.ReceivedAt = time.Now().UnixNano()
	data, err := job.Encode()
	if err != nil {
		return "", fmt.Errorf("replay dead letter %d: %w", dlqSeq, err)
	}
	if _, err := js.Publish(ctx, s.Job(job.Origin), data, jetstream.WithMsgID(job.ID)); err != nil {
		return "", fmt.Errorf("replay dead letter %d: enqueue: %w", dlqSeq, err)
	}
	if err := st.DeleteMsg(ctx, dlqSeq); err != nil {
		return job.ID, fmt.Errorf("replay dead letter %d: remove: %w", dlqSeq, err)
	}
	return job.ID, nil
}
