package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// The jobs stream's keeper.
//
// nats-server's file store deletes a stream's last message block when its
// last message is removed and creates a new block file for the next write
// (filestore.go, removeMsgBlock). A work-queue stream that empties after
// every job, which is what one job at a time does, so creates and deletes a
// file per job: on ext4 that was a fifth of a one-at-a-time job's broker CPU
// (BenchmarkJobsRoundTrip). A keeper message, on a subject no consumer
// reads, keeps the last block from emptying. Blocks still roll over once
// full, leaving a keeper behind in an older one, so executors publish a new
// keeper every KeeperInterval; each lives for KeeperTTL (a per-message TTL,
// which the jobs stream allows) and so never outlives the executors that
// keep publishing them. Keepers published by several executors within one
// KeeperInterval are one message (the same Nats-Msg-Id), so the stream
// holds at most KeeperTTL/KeeperInterval+1 of them, whatever the number of
// executors; they count against streams.max_jobs like jobs.

const (
	// KeeperInterval is how often executors publish a jobs-stream keeper
	// by default (executor.jobs_keeper_interval).
	KeeperInterval = 15 * time.Second
	// KeeperTTL is how long one keeper stays: long enough that the next
	// one, KeeperInterval later, arrives before it goes.
	KeeperTTL = 4 * KeeperInterval
)

// ErrKeeperRefused is returned, wrapped, by KeepJobsBlock when the jobs
// stream does not allow per-message TTLs: it was provisioned by an older
// version (provision it with this one: pipeline up, or any role with admin
// rights).
var ErrKeeperRefused = errors.New("broker: jobs stream refused its keeper: it does not allow per-message TTLs (provision it with this version)")

// KeepJobsBlock publishes a keeper message into the jobs stream (see
// above), unless one was published within the same interval of length
// every (KeeperInterval if zero) counted from the Unix epoch; it lives for
// ttl (KeeperTTL if zero). A full stream needs no keeper: it refuses it and
// KeepJobsBlock returns nil. It fails with ErrKeeperRefused (wrapped) when
// the stream does not allow TTLs, or with the publish's error. It is safe
// for concurrent use, also from many processes.
func KeepJobsBlock(ctx context.Context, js jetstream.JetStream, s Subjects, now time.Time, every, ttl time.Duration) error {
	if every <= 0 {
		every = KeeperInterval
	}
	if ttl <= 0 {
		ttl = KeeperTTL
	}
	id := "keeper." + strconv.FormatInt(now.UnixNano()/int64(every), 10)
	_, err := js.Publish(ctx, s.JobsKeeper(), nil, jetstream.WithMsgID(id), jetstream.WithMsgTTL(ttl))
	var apiErr *jetstream.APIError
	switch {
	case err == nil || isStoreFull(err):
		return nil
	case errors.As(err, &apiErr) && server.ErrorIdentifier(apiErr.ErrorCode) == server.JSMessageTTLDisabledErr:
		return fmt.Errorf("%w: %w", ErrKeeperRefused, err)
	}
	return fmt.Errorf("jobs stream keeper: %w", err)
}
