package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Per-origin jobs consumers. Executors read each origin's jobs through its
// own durable consumer on the jobs stream, filtered on that origin's job
// subject (non-overlapping filters, as a work-queue stream requires), so an
// executor can take turns between origins instead of reading one FIFO in
// which one origin's backlog stands in front of everyone else's jobs.
//
// Every jobs consumer is built from one template that Provision stores in
// the jobs stream's metadata, so whichever role creates a consumer (the
// origin at start, or an executor that finds jobs without one) creates the
// same one. A consumer that no executor pulls from for the template's idle
// time is deleted by the server (InactiveThreshold): an origin that goes
// away leaves nothing behind, and its jobs, if any are left, stay in the
// stream for the next consumer of that origin.

// DefaultJobsConsumerIdle is StreamsConfig.JobsConsumerIdle's default.
const DefaultJobsConsumerIdle = 5 * time.Minute

// jobsConsumerPrefix starts every per-origin jobs consumer's name.
const jobsConsumerPrefix = "jobs-"

// legacyExecutorsConsumer is the unfiltered consumer every executor shared
// before per-origin consumers. A work-queue stream does not allow it next to
// filtered ones: Provision deletes it.
const legacyExecutorsConsumer = "executors"

// Stream metadata keys of the jobs consumer template.
const (
	metaAckWait       = "pipeline.jobs.ack_wait"
	metaMaxDeliver    = "pipeline.jobs.max_deliver"
	metaMaxAckPending = "pipeline.jobs.max_ack_pending"
	metaIdle          = "pipeline.jobs.consumer_idle"
)

// ErrNoJobsTemplate is returned, wrapped, when the jobs stream carries no
// jobs consumer template: it was provisioned by an older version, so
// provision it again (pipeline up, or any role with admin rights).
var ErrNoJobsTemplate = errors.New("broker: jobs stream has no jobs consumer template (provision it with this version)")

// JobsConsumer is the durable consumer through which executors read origin
// originID's jobs.
func JobsConsumer(originID string) string { return jobsConsumerPrefix + originID }

// JobsConsumerOrigin returns the origin id of a jobs consumer name, and
// false for any other name.
func JobsConsumerOrigin(name string) (string, bool) {
	id, ok := strings.CutPrefix(name, jobsConsumerPrefix)
	if !ok || ValidateToken("origin id", id) != nil {
		return "", false
	}
	return id, true
}

// JobsTemplate is what every per-origin jobs consumer is made of.
type JobsTemplate struct {
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int
	// Idle is the consumer's InactiveThreshold, and how long executors keep
	// pulling from an origin with no stored jobs.
	Idle     time.Duration
	Replicas int
}

// metadata is t as jobs stream metadata.
func (t JobsTemplate) metadata() map[string]string {
	return map[string]string{
		metaAckWait:       t.AckWait.String(),
		metaMaxDeliver:    strconv.Itoa(t.MaxDeliver),
		metaMaxAckPending: strconv.Itoa(t.MaxAckPending),
		metaIdle:          t.Idle.String(),
	}
}

// JobsTemplateOf reads the template from the jobs stream's configuration. It
// fails with ErrNoJobsTemplate when the metadata is missing or unreadable.
func JobsTemplateOf(cfg jetstream.StreamConfig) (JobsTemplate, error) {
	md := cfg.Metadata
	aw, err1 := time.ParseDuration(md[metaAckWait])
	md1, err2 := strconv.Atoi(md[metaMaxDeliver])
	map1, err3 := strconv.Atoi(md[metaMaxAckPending])
	idle, err4 := time.ParseDuration(md[metaIdle])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return JobsTemplate{}, fmt.Errorf("%w: %v", ErrNoJobsTemplate, err)
	}
	return JobsTemplate{AckWait: aw, MaxDeliver: md1, MaxAckPending: map1, Idle: idle, Replicas: cfg.Replicas}, nil
}

// Config is the consumer configuration of origin originID's jobs consumer.
func (t JobsTemplate) Config(s Subjects, originID string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:           JobsConsumer(originID),
		Description:       "jobs of origin " + originID + ", shared by every executor",
		FilterSubject:     s.Job(originID),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           t.AckWait,
		MaxDeliver:        t.MaxDeliver,
		BackOff:           StreamsConfig{AckWait: t.AckWait, MaxDeliver: t.MaxDeliver}.Backoff(),
		MaxAckPending:     t.MaxAckPending,
		InactiveThreshold: t.Idle,
		Replicas:          t.Replicas,
	}
}

// EnsureJobsConsumer creates origin originID's jobs consumer from the
// template in the jobs stream (or updates it to the template) and returns
// it. It is idempotent and safe to call from many processes at once. It
// fails with ErrNoJobsTemplate on a stream provisioned by an older version,
// and with the server's error when a consumer with an overlapping filter
// exists (an unmigrated store: run Provision).
func EnsureJobsConsumer(ctx context.Context, js jetstream.JetStream, s Subjects, originID string) (jetstream.Consumer, error) {
	st, err := js.Stream(ctx, JobsStream)
	if err != nil {
		return nil, fmt.Errorf("jobs consumer %s: stream %s: %w", originID, JobsStream, err)
	}
	t, err := JobsTemplateOf(st.CachedInfo().Config)
	if err != nil {
		return nil, fmt.Errorf("jobs consumer %s: %w", originID, err)
	}
	return EnsureJobsConsumerFrom(ctx, st, t, s, originID)
}

// EnsureJobsConsumerFrom is EnsureJobsConsumer with the stream and template
// already at hand.
func EnsureJobsConsumerFrom(ctx context.Context, st jetstream.Stream, t JobsTemplate, s Subjects, originID string) (jetstream.Consumer, error) {
	cons, err := st.CreateOrUpdateConsumer(ctx, t.Config(s, originID))
	if err != nil {
		return nil, fmt.Errorf("jobs consumer %s: %w", originID, err)
	}
	return cons, nil
}

// jobsTemplate is the template Provision stores for c (with defaults).
func (c StreamsConfig) jobsTemplate() JobsTemplate {
	return JobsTemplate{
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		Idle:          c.JobsConsumerIdle,
		Replicas:      c.Replicas,
	}
}

// dropLegacyConsumer deletes the shared unfiltered executors consumer of
// older versions, which a work-queue stream does not allow next to the
// per-origin ones. Its unacknowledged jobs stay in the stream and reach the
// per-origin consumers; a result an old executor stores meanwhile is
// de-duplicated by job id.
func dropLegacyConsumer(ctx context.Context, js jetstream.JetStream) error {
	err := js.DeleteConsumer(ctx, JobsStream, legacyExecutorsConsumer)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("provision: delete legacy consumer %s: %w", legacyExecutorsConsumer, err)
	}
	return nil
}
