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
	return nil
}
