package broker

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// RatesBucket is the key-value bucket through which executors share each
// rate-limited destination's request schedule (executor/ratelimit.go): one
// key per host, whose value is the Unix-nanosecond time of the next request
// slot no executor has leased yet. It is kept in memory: losing it (a
// server restart) only restarts every schedule from now.
const RatesBucket = "PIPELINE_RATES"

// RateKey is the key of destination hostport ("host:port") in RatesBucket:
// "h." and the host's unpadded base64url form, since KV keys cannot hold
// ':' or IPv6 brackets.
func RateKey(hostport string) string {
	return "h." + base64.RawURLEncoding.EncodeToString([]byte(hostport))
}

// EnsureRates creates the rates bucket in js's account if it is missing
// (memory storage, one revision per key, replicas as given) and returns
// it. Every executor with a rate-limited destination calls it at start; it
// fails when the server refuses the bucket or ctx ends first.
func EnsureRates(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RatesBucket,
		Description: "per-destination request schedules shared by the executors (next unleased slot, Unix ns)",
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", RatesBucket, err)
	}
	return kv, nil
}
