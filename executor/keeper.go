package executor

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// keeperTimeout bounds one keeper turn.
const keeperTimeout = 5 * time.Second

// keepOnce publishes the jobs stream's keeper and deletes older ones
// (broker.KeepJobsBlock), and reports whether to go on doing so: not for a
// stream in memory, which has no block files. A failed turn (NATS away) is
// retried at the next one. *checked records that the stream's storage was
// looked at.
func (e *Executor) keepOnce(parent context.Context, checked *bool) bool {
	ctx, cancel := context.WithTimeout(parent, keeperTimeout)
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
	if err := broker.KeepJobsBlock(ctx, e.js, e.cfg.Subjects, time.Now(), e.cfg.JobsKeeperInterval); err != nil && parent.Err() == nil {
		e.log.Debug().Err(err).Msg("jobs stream keeper not kept; retrying next turn")
	}
	return true
}
