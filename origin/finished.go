package origin

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// finished is this origin's view of the finished-results bucket: results are
// stored there after their continuation ran, before the result message is
// acknowledged. A nil kv means the bucket is disabled.
type finished struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	origin string
}

// put stores a finished result (its wire form) asynchronously.
func (f *finished) put(jobID string, data []byte) (jetstream.PubAckFuture, error) {
	if f.kv == nil {
		return nil, nil
	}
	fut, err := f.js.PublishAsync(broker.FinishedSubject(f.origin, jobID), data)
	if err != nil {
		return nil, fmt.Errorf("store finished result %s: %w", jobID, err)
	}
	return fut, nil
}

// get returns the finished result of jobID, or nil if there is none (unknown,
// not finished, or past the retention window).
func (f *finished) get(ctx context.Context, jobID string) (*broker.Result, error) {
	if f.kv == nil {
		return nil, nil
	}
	e, err := f.kv.Get(ctx, broker.FinishedKey(f.origin, jobID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get finished result %s: %w", jobID, err)
	}
	return broker.DecodeResult(e.Value())
}
