package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The jobs stream's keeper.
//
// nats-server's file store deletes a stream's last message block when its
// last message is removed and creates a new block file for the next write
// (filestore.go, removeMsgBlock). A work-queue stream that empties after
// every job, which is what one job at a time does, so creates and deletes a
// file per job: over a quarter of a one-at-a-time job's CPU in
// BenchmarkJobsRoundTrip. A keeper message, on a subject no jobs consumer's
// filter matches, keeps the last block from emptying. Blocks still roll over
// once full, leaving the keeper behind in an older one, so executors publish
// a new keeper every KeeperInterval and delete the older ones. Keepers
// published by several executors within one interval are one message (the
// same Nats-Msg-Id), and whichever executor publishes next deletes every
// older keeper, also one left by an executor that died: the stream holds one
// keeper, two for a moment. Keepers are plain messages (no per-message TTL,
// which a stream cannot turn off again once on: an older version could then
// no longer provision it). They count against streams.max_jobs like jobs.

// KeeperInterval is how often executors publish a jobs-stream keeper by
// default (executor.jobs_keeper_interval).
const KeeperInterval = 15 * time.Second

// keeperSweep bounds the older keepers one KeepJobsBlock deletes.
const keeperSweep = 16

// KeepJobsBlock publishes a keeper message into the jobs stream (see
// above), unless one was published within the same interval of length
// every (KeeperInterval if zero or less) counted from the Unix epoch, and
// then deletes every older keeper (at most 16 per call). A full stream needs
// no keeper: it refuses it, and KeepJobsBlock returns nil. It fails with the
// error of the publish, the lookup or a delete (one another executor made
// first is no error). It is safe for concurrent use, also from many
// processes.
func KeepJobsBlock(ctx context.Context, js jetstream.JetStream, s Subjects, now time.Time, every time.Duration) error {
	if every <= 0 {
		every = KeeperInterval
	}
	id := "keeper." + strconv.FormatInt(now.UnixNano()/int64(every), 10)
	ack, err := js.Publish(ctx, s.JobsKeeper(), nil, jetstream.WithMsgID(id))
	switch {
	case isStoreFull(err):
		return nil
	case err != nil:
		return fmt.Errorf("jobs stream keeper: %w", err)
	}
	st, err := js.Stream(ctx, JobsStream)
	if err != nil {
		return fmt.Errorf("jobs stream keeper: stream %s: %w", JobsStream, err)
	}
	for seq, i := uint64(1), 0; i < keeperSweep; i++ {
		old, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.JobsKeeper()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("jobs stream keeper: look up older keepers: %w", err)
		}
		if old.Sequence >= ack.Sequence {
			return nil
		}
		if err := st.DeleteMsg(ctx, old.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			return fmt.Errorf("jobs stream keeper: delete older keeper %d: %w", old.Sequence, err)
		}
		seq = old.Sequence + 1
	}
	return nil
}
