package executor

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// keeperTimeout bounds one keeper publish.
const keeperTimeout = 5 * time.Second

// keepOnce publishes the jobs stream's keeper (broker.KeepJobsBlock) and
// reports whether to go on doing so: not for a stream in memory (it has no
// block files) nor for one that does not allow message TTLs (provisioned by
// an older version; a warning says so). A failed publish (NATS away) is
// retried at the next turn. *checked records that the stream's storage was
// looked at.
func (e *Executor) keepOnce(ctx context.Context, checked *bool) bool {
	ctx, cancel := context.WithTimeout(ctx, keeperTimeout)
	defer cancel()
	if !*checked {
		st, err := e.js.Stream(ctx, broker.JobsStream)
		if err != nil {
			return true // look again next turn
		}
		*checked = true
		if st.CachedInfo().Config.Storage == jetstream.MemoryStorage {
			return false
		}
	}
	err := broker.KeepJobsBlock(ctx, e.js, e.cfg.Subjects, time.Now(), e.cfg.JobsKeeperInterval, 4*e.cfg.JobsKeeperInterval)
	if errors.Is(err, broker.ErrKeeperRefused) {
		e.log.Warn().Err(err).Msg("jobs stream keeper stopped: until the stream is provisioned again, jobs that come one at a time cost the NATS server a file each")
		return false
	}
	if err != nil && ctx.Err() == nil {
		e.log.Debug().Err(err).Msg("jobs stream keeper not published; retrying next turn")
	}
	return true
}
