package broker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// FinishedBucket is the key-value bucket where origins keep each finished
// job's result, keyed "<origin>.<job id>", for the retention window. It makes
// get-result work after a reconnect (and after an origin restart) and tells
// an origin that a redelivered result's continuation already ran.
const FinishedBucket = "PIPELINE_FINISHED"

// FinishedKey is the key of job jobID of origin originID in FinishedBucket.
func FinishedKey(originID, jobID string) string { return originID + "." + jobID }

// FinishedSubject is the subject a put of FinishedKey(originID, jobID) is
// published on (for asynchronous puts).
func FinishedSubject(originID, jobID string) string {
	return "$KV." + FinishedBucket + "." + FinishedKey(originID, jobID)
}

func provisionFinished(ctx context.Context, js jetstream.JetStream, c StreamsConfig, storage jetstream.StorageType) error {
	if c.FinishedTTL < 0 {
		return nil
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      FinishedBucket,
		Description: "finished results by origin and job id, for get-result and cross-restart de-duplication",
		TTL:         c.FinishedTTL,
		MaxBytes:    c.FinishedMaxBytes,
		Storage:     storage,
		Replicas:    c.Replicas,
	})
	if err != nil {
		return fmt.Errorf("provision bucket %s: %w", FinishedBucket, err)
	}
	// A KV bucket refuses new keys when full (discard new). For finished
	// results the oldest must go instead: a full store must never refuse
	// the result of a job that is finishing now, which is what makes an
	// origin's restart recovery and get-result work. Dropping an old entry
	// is safe for de-duplication, which needs an entry only between its
	// continuation and the ack of its result.
	st, err := js.Stream(ctx, finishedStream)
	if err != nil {
		return fmt.Errorf("provision bucket %s: %w", FinishedBucket, err)
	}
	if sc := st.CachedInfo().Config; sc.Discard != jetstream.DiscardOld {
		sc.Discard = jetstream.DiscardOld
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("provision bucket %s: discard old: %w", FinishedBucket, err)
		}
	}
	return nil
}

// finishedStream is the stream behind FinishedBucket.
const finishedStream = "KV_" + FinishedBucket
