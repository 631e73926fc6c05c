package origin

import (
	"context"
	"errors"
	"fmt"
	"sync"

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

	// storing holds results whose put is not acknowledged yet, so a
	// get-result right after the result frame finds them.
	mu      sync.Mutex
	storing map[string][]byte
}

// enabled reports whether finished results are kept (the bucket exists).
func (f *finished) enabled() bool { return f.kv != nil }

// begin makes a result visible to get-result before its continuation runs
// (the continuation may push the result frame, and the client may ask
// get-result at once); put stores it, stored or a failed continuation ends
// the window.
func (f *finished) begin(jobID string, data []byte) {
	if f.kv == nil {
		return
	}
	f.mu.Lock()
	if f.storing == nil {
		f.storing = make(map[string][]byte)
	}
	f.storing[jobID] = data
	f.mu.Unlock()
}

// put stores a finished result (its wire form) asynchronously.
func (f *finished) put(jobID string, data []byte) (jetstream.PubAckFuture, error) {
	if f.kv == nil {
		return nil, nil
	}
	f.begin(jobID, data)
	fut, err := f.js.PublishAsync(broker.FinishedSubject(f.origin, jobID), data)
	if err != nil {
		f.stored(jobID)
		return nil, fmt.Errorf("store finished result %s: %w", jobID, err)
	}
	return fut, nil
}

// stored ends the read-your-writes window of a put (acknowledged or failed).
func (f *finished) stored(jobID string) {
	f.mu.Lock()
	delete(f.storing, jobID)
	f.mu.Unlock()
}

// get returns the finished result of jobID, or nil if there is none (unknown,
// not finished, or past the retention window).
func (f *finished) get(ctx context.Context, jobID string) (*broker.Result, error) {
	if f.kv == nil {
		return nil, nil
	}
	f.mu.Lock()
	data, ok := f.storing[jobID]
	f.mu.Unlock()
	if ok {
		return broker.DecodeResult(data)
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
