package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cancellation (PROTOCOL.md §1.1 cancel). An origin that cancels a job
// answers its clients itself (the job's final frame is an error with code
// canceled) and stores a mark for the executors on Subjects.Cancel(origin,
// job) in the CancelsStream. Every executor follows that stream (an ordered
// consumer from its start) and keeps the marks in memory: a marked job it
// is handed is acknowledged without a fetch, and a marked job it is running
// has its fetch aborted. Marks live for CancelRetention, longer than a job
// can wait (delay_ms is at most a day).

// CancelsStream holds the cancel marks.
const CancelsStream = "PIPELINE_CANCELS"

// CancelRetention is how long a cancel mark is kept.
const CancelRetention = 48 * time.Hour

// Cancel is the subject of the cancel mark of job jobID of origin originID.
func (s Subjects) Cancel(originID, jobID string) string {
	return s.prefix() + ".cancel." + originID + "." + jobID
}

// CancelsWildcard matches every cancel mark.
func (s Subjects) CancelsWildcard() string { return s.prefix() + ".cancel.*.*" }

// CancelOf returns the origin and job ids of a cancel mark's subject, and
// false for any other subject.
func (s Subjects) CancelOf(subject string) (originID, jobID string, ok bool) {
	rest, ok := strings.CutPrefix(subject, s.prefix()+".cancel.")
	if !ok {
		return "", "", false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			return rest[:i], rest[i+1:], i > 0 && i < len(rest)-1
		}
	}
	return "", "", false
}

// provisionCancels creates or updates the CancelsStream: marks can be
// neither deleted nor purged nor rolled up (no origin can undo another's
// cancel), one per job, dropped oldest first beyond 64 MiB.
func provisionCancels(ctx context.Context, js jetstream.JetStream, c StreamsConfig, storage jetstream.StorageType) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              CancelsStream,
		Description:       "cancel marks of fetch jobs, followed by every executor",
		Subjects:          []string{c.Subjects.CancelsWildcard()},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            CancelRetention,
		MaxBytes:          64 << 20,
		MaxMsgsPerSubject: 1,
		Storage:           storage,
		Replicas:          c.Replicas,
		DenyDelete:        true,
		DenyPurge:         true,
	})
	if err != nil {
		return fmt.Errorf("provision stream %s: %w", CancelsStream, err)
	}
	return nil
}
