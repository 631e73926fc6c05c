package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults that more than one role needs. Every other stream setting's
// default is in DefaultStreamsConfig.
const (
	// DefaultAckWait is how long a delivered job or result may stay
	// unacknowledged, without progress, before it is redelivered.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending caps messages in flight on a consumer.
	DefaultMaxAckPending = 20_000
)

// Storage is where streams keep their messages.
type Storage string

// Storage kinds.
const (
	// FileStorage keeps jobs and results across server restarts (default).
	FileStorage Storage = "file"
	// MemoryStorage is faster but loses everything queued when the server
	// stops; for benchmarks only.
	MemoryStorage Storage = "memory"
)

// StreamsConfig sizes the jobs and results streams and the per-origin jobs
// consumers: the `streams` section of the configuration. Zero values take the
// defaults of DefaultStreamsConfig.
type StreamsConfig struct {
	Subjects Subjects `yaml:"-"`
	// Tenants are the origins that live in their own NATS accounts (nats.auth
	// on: AuthConfig.OriginIDs). Provision creates their results consumers
	// in the pipeline account (an origin may not create consumers there) and
	// no shared delayed-jobs stream (each origin keeps its own, see
	// ProvisionDelayed).
	Tenants []string `yaml:"-"`
	// Replicas per stream: 1 on a single server, 3 on a cluster. Default 1.
	Replicas int `yaml:"replicas"`
	// Storage is file (default) or memory.
	Storage Storage `yaml:"storage"`
	// MaxJobs caps queued jobs; a publish beyond it fails with a queue-full
	// error (CodeOf gives CodeQueueFull). Default 1,000,000.
	MaxJobs int64 `yaml:"max_jobs"`
	// MaxJobBytes caps the jobs stream size. Default 1 GiB.
	MaxJobBytes int64 `yaml:"max_job_bytes"`
	// MaxDelayedBytes caps the delayed-jobs stream (start-fetch delay_ms)
	// of each origin, or of all origins without auth; beyond it the oldest
	// schedules are dropped (a stream with message schedules cannot refuse
	// new ones). Default 256 MiB.
	MaxDelayedBytes int64 `yaml:"max_delayed_bytes"`
	// MaxResultBytes caps the results stream size. Default 1 GiB.
	MaxResultBytes int64 `yaml:"max_result_bytes"`
	// DuplicateWindow is how long a job id (Nats-Msg-Id) is remembered for
	// de-duplication. Default 2 minutes.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// KeyWindow is how long an idempotency key (start-fetch "key") is
	// remembered: within it an origin accepts at most one job per key
	// (PROTOCOL.md §1.1). The jobs stream keeps every job id for
	// max(DuplicateWindow, KeyWindow), which costs the server about 150
	// bytes of memory per job stored within that window. Default 10 minutes.
	KeyWindow time.Duration `yaml:"key_window"`
	// AckWait is how long an executor may hold a job without acking or
	// signalling progress before it is redelivered. Default DefaultAckWait.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxDeliver caps deliveries per job. Default 5.
	MaxDeliver int `yaml:"max_deliver"`
	// MaxAckPending caps one origin's jobs in flight across all executors
	// (each origin has its own jobs consumer). Default DefaultMaxAckPending.
	MaxAckPending int `yaml:"max_ack_pending"`
	// JobsConsumerIdle is how long an origin's jobs consumer lives on with
	// no stored jobs: executors stop pulling from it after this long, and
	// the server deletes it after this long without pulls. Default
	// DefaultJobsConsumerIdle.
	JobsConsumerIdle time.Duration `yaml:"jobs_consumer_idle"`
	// DeadLetterMaxAge is how long dead jobs are kept. Default 7 days.
	DeadLetterMaxAge time.Duration `yaml:"dead_letter_max_age"`
	// FinishedTTL is how long a result stays in the results stream after
	// its origin read it, for get-result (TrimResults drops it after).
	// Default 10 minutes; negative: dropped at once, get-result disabled.
	FinishedTTL time.Duration `yaml:"result_retention"`
	// FinishedMaxBytes: when the results stream holds this many bytes (or
	// 3/4 of MaxResultBytes, if less), results their origin read are
	// dropped before their retention ends, oldest first, so that new
	// results always find room. Default 1 GiB.
	FinishedMaxBytes int64 `yaml:"result_retention_max_bytes"`
}

// DefaultStreamsConfig returns the stream settings with every default
// filled in.
func DefaultStreamsConfig() StreamsConfig { return StreamsConfig{}.withDefaults() }

// Backoff is the redelivery schedule for jobs whose executor went silent
// (crashed): AckWait, then doubling, one step per delivery.
func (c StreamsConfig) Backoff() []time.Duration {
	d := c.withDefaults()
	steps := make([]time.Duration, 0, d.MaxDeliver)
	w := d.AckWait
	for i := 0; i < d.MaxDeliver && d.MaxDeliver > 0; i++ {
		steps = append(steps, w)
		if w < 10*time.Minute {
			w *= 2
		}
	}
	return steps
}

// Validate reports a setting that cannot work.
func (c StreamsConfig) Validate() error {
	if c.KeyWindow < 0 {
		return fmt.Errorf("streams.key_window %s: must not be negative", c.KeyWindow)
	}
	switch c.Storage {
	case "", FileStorage, MemoryStorage:
	default:
		return fmt.Errorf("streams.storage %q: want %s or %s", c.Storage, FileStorage, MemoryStorage)
	}
	return nil
}

func (c StreamsConfig) withDefaults() StreamsConfig {
	d := c
	if d.Replicas <= 0 {
		d.Replicas = 1
	}
	if d.Storage == "" {
		d.Storage = FileStorage
	}
	if d.MaxJobs == 0 {
		d.MaxJobs = 1_000_000
	}
	if d.MaxJobBytes == 0 {
		d.MaxJobBytes = 1 << 30
	}
	if d.MaxDelayedBytes == 0 {
		d.MaxDelayedBytes = 256 << 20
	}
	if d.MaxResultBytes == 0 {
		d.MaxResultBytes = 1 << 30
	}
	if d.DuplicateWindow == 0 {
		d.DuplicateWindow = 2 * time.Minute
	}
	if d.KeyWindow == 0 {
		d.KeyWindow = 10 * time.Minute
	}
	if d.AckWait == 0 {
		d.AckWait = DefaultAckWait
	}
	if d.MaxDeliver == 0 {
		d.MaxDeliver = 5
	}
	if d.MaxAckPending == 0 {
		d.MaxAckPending = DefaultMaxAckPending
	}
	if d.JobsConsumerIdle <= 0 {
		d.JobsConsumerIdle = DefaultJobsConsumerIdle
	}
	if d.FinishedTTL == 0 {
		d.FinishedTTL = 10 * time.Minute
	}
	if d.FinishedMaxBytes == 0 {
		d.FinishedMaxBytes = 1 << 30
	}
	if d.DeadLetterMaxAge == 0 {
		d.DeadLetterMaxAge = 7 * 24 * time.Hour
	}
	return d
}

// Provision creates or updates the jobs and results streams, stores the
// per-origin jobs consumer template in the jobs stream (JobsTemplateOf) and
// deletes the shared executors consumer of older versions. Per-origin jobs
// consumers are created by their origin at start, or by an executor that
// finds jobs without one (EnsureJobsConsumer). It is idempotent: every role
// may call it at start.
//
// Provision never lowers the replica count of existing streams: a role
// started without the cluster's replicas setting must not scale a
// replicated deployment down to one copy.
//
// A freshly formed cluster may refuse placement for a moment (a peer not yet
// online, no meta leader yet): such errors are retried, each attempt bounded
// to a few seconds, until ctx ends.
func Provision(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	return retryTransient(ctx, func(actx context.Context) error { return provision(actx, js, cfg.withDefaults()) })
}

// retryTransient runs attempt, each try bounded to 5 s, until it succeeds,
// fails with an error a forming cluster does not give for a while
// (transientClusterErr), or ctx ends; it returns the last try's error.
func retryTransient(ctx context.Context, attempt func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := attempt(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !transientClusterErr(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// transientClusterErr reports errors a forming or recovering cluster gives
// for a while: no suitable peers, JetStream temporarily unavailable, no
// leader, or no answer within the attempt's deadline.
func transientClusterErr(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch server.ErrorIdentifier(apiErr.ErrorCode) {
		case server.JSClusterNoPeersErrF, server.JSClusterNotAvailErr, server.JSClusterNotLeaderErr:
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

func provision(ctx context.Context, js jetstream.JetStream, c StreamsConfig) error {
	if st, err := js.Stream(ctx, JobsStream); err == nil {
		if r := st.CachedInfo().Config.Replicas; r > c.Replicas {
			c.Replicas = r
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("provision: look up stream %s: %w", JobsStream, err)
	}
	storage := jetstream.FileStorage
	if c.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	jobs := jetstream.StreamConfig{
		Name:        JobsStream,
		Description: "pipeline fetch jobs (work queue)",
		Subjects:    []string{c.Subjects.JobsWildcard()},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     c.MaxJobs,
		MaxBytes:    c.MaxJobBytes,
		Storage:     storage,
		Replicas:    c.Replicas,
		Duplicates:  max(c.DuplicateWindow, c.KeyWindow),
		Metadata:    c.jobsTemplate().metadata(),
	}
	if _, err := js.CreateOrUpdateStream(ctx, jobs); err != nil {
		return fmt.Errorf("provision stream %s: %w", JobsStream, err)
	}
	if err := provisionResults(ctx, js, c); err != nil {
		return err
	}
	if err := dropLegacyConsumer(ctx, js); err != nil {
		return err
	}
	if err := provisionCancels(ctx, js, c, storage); err != nil {
		return err
	}
	for _, id := range c.Tenants {
		if err := ValidateToken("origin id", id); err != nil {
			return fmt.Errorf("provision: %w", err)
		}
		for _, oc := range OriginConsumerConfigs(c.Subjects, id, c.Replicas, c.AckWait) {
			if _, err := js.CreateOrUpdateConsumer(ctx, ResultsStream, oc); err != nil {
				return fmt.Errorf("provision consumer %s: %w", oc.Durable, err)
			}
		}
		// An origin in its own account cannot create its jobs consumer
		// (executors read it in this account): the admin does.
		if _, err := EnsureJobsConsumer(ctx, js, c.Subjects, id); err != nil {
			return fmt.Errorf("provision: %w", err)
		}
	}
	if len(c.Tenants) == 0 {
		if err := provisionDelayed(ctx, js, c); err != nil {
			return err
		}
	}
	return provisionDeadLetters(ctx, js, c, storage)
}

// OriginConsumerConfig is the durable consumer through which origin originID
// reads its results. Results delivered to an origin that dies unacknowledged
// are redelivered after ackWait (default DefaultAckWait).
func OriginConsumerConfig(s Subjects, originID string, replicas int, ackWait time.Duration) jetstream.ConsumerConfig {
	if replicas <= 0 {
		replicas = 1
	}
	if ackWait <= 0 {
		ackWait = DefaultAckWait
	}
	return jetstream.ConsumerConfig{
		Durable:       OriginConsumer(originID),
		Description:   "results for origin " + originID,
		FilterSubject: s.ResultsFilter(originID),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: DefaultMaxAckPending,
		Replicas:      replicas,
	}
}

// OriginConsumerConfigs are origin originID's two results consumers: its
// small lane (OriginConsumerConfig) and its bulk lane (OriginBulkConsumer,
// filtered on Subjects.BulkResultsFilter), with the same settings.
func OriginConsumerConfigs(s Subjects, originID string, replicas int, ackWait time.Duration) []jetstream.ConsumerConfig {
	small := OriginConsumerConfig(s, originID, replicas, ackWait)
	bulk := small
	bulk.Durable = OriginBulkConsumer(originID)
	bulk.Description = "large results for origin " + originID
	bulk.FilterSubject = s.BulkResultsFilter(originID)
	return []jetstream.ConsumerConfig{small, bulk}
}

// PullOptions are the pull settings every consumer of this project uses on
// top of its own limits: a short expiry and a 2 s heartbeat, so a client
// whose consumer leader moved (a cluster node was lost) notices within a few
// seconds instead of the library default of 30.
func PullOptions() []jetstream.PullConsumeOpt {
	return []jetstream.PullConsumeOpt{jetstream.PullExpiry(10 * time.Second), jetstream.PullHeartbeat(2 * time.Second)}
}

// ResultsStreamConfig is the results stream: one subject per job
// (Subjects.ResultOf; results on the plain Subjects.Result are stored under
// LegacyResultToken), limits retention so that a result stays after its
// origin acknowledged it and is the job's finished record (get-result reads
// it by direct get), no age limit (a result whose origin is down must wait
// for it), and discard new when full: executors hold their results rather
// than drop stored ones. TrimResults keeps it within its retention.
func ResultsStreamConfig(c StreamsConfig) jetstream.StreamConfig {
	c = c.withDefaults()
	storage := jetstream.FileStorage
	if c.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        ResultsStream,
		Description: "pipeline fetch results, one subject per job, kept for get-result after their origin read them",
		Subjects:    c.Subjects.ResultsSubjects(),
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      c.Subjects.Result("*"),
			Destination: c.Subjects.ResultOf("{{wildcard(1)}}", LegacyResultToken),
		},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    c.MaxResultBytes,
		Storage:     storage,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		AllowDirect: true,
	}
}

// provisionResults creates or updates the results stream. Versions before
// per-job result subjects kept it under work-queue retention, which a stream
// cannot leave: an empty one is replaced; one still holding results is left
// alone with an error saying what to do.
func provisionResults(ctx context.Context, js jetstream.JetStream, c StreamsConfig) error {
	cfg := ResultsStreamConfig(c)
	st, err := js.Stream(ctx, ResultsStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return fmt.Errorf("provision: look up stream %s: %w", ResultsStream, err)
	case st.CachedInfo().Config.Retention != jetstream.LimitsPolicy:
		if n := st.CachedInfo().State.Msgs; n > 0 {
			return fmt.Errorf("provision stream %s: it holds %d results stored by an older version under work-queue retention; run that version until its origins have read them (or delete the stream), then start this one", ResultsStream, n)
		}
		if err := js.DeleteStream(ctx, ResultsStream); err != nil {
			return fmt.Errorf("provision stream %s: replace the work-queue stream of an older version: %w", ResultsStream, err)
		}
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("provision stream %s: %w", ResultsStream, err)
	}
	return nil
}
