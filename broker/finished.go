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

// ProvisionFinished creates or updates the finished-results bucket in js's
// account, sized by cfg (FinishedTTL, FinishedMaxBytes, Storage, Replicas).
// Provision calls it for the shared bucket; an origin in its own account
// (nats.auth on) calls it for its own. A negative FinishedTTL disables the
// bucket: nothing is created. It fails when the server refuses the bucket
// (e.g. over the account's storage limit) or ctx ends first.
func ProvisionFinished(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	c := cfg.withDefaults()
	if c.FinishedTTL < 0 {
		return nil
	}
	storage := jetstream.FileStorage
	if c.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
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
