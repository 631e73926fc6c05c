package stack

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

// TestFullResultsStreamLosesNothing fills the results stream (its origin
// is stuck in a continuation) until it refuses results: executors must hold
// them and store them once there is room, so every job still ends exactly
// once and no fetch is made again. Dropping the oldest results instead
// would leave their jobs without a final frame forever.
func TestFullResultsStreamLosesNothing(t *testing.T) {
	ct := newCountingTarget(t)
	release := make(chan struct{})
	var mu sync.Mutex
	runs := map[string]int{}
	cont := func(ctx context.Context, res *broker.Result) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		runs[res.JobID]++
		mu.Unlock()
		return nil
	}
	st := startStack(t, func(c *config.Config) {
		ct.allow(c)
		c.Streams.MaxResultBytes = 64 << 10
	}, WithContinuation("test.block", cont))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 20
	for i := 0; i < n; i++ {
		// 16 KiB bodies: four results fill the stream.
		if _, err := st.Origin().ProxyFetch(ctx, origin.FetchRequest{URL: ct.URL + "/r" + itoa(i) + "?n=16384"}, "test.block", nil); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		v, _ := testutil.MetricValue(t, st.Metrics().Gatherer(), executor.MetricResultsHeldTotal, nil)
		return v > 0
	}, "the results stream never refused a result")
	if v, _ := testutil.MetricValue(t, st.Metrics().Gatherer(), executor.MetricPublishFailuresTotal, nil); v != 0 {
		t.Errorf("%v results failed to store (want 0: a full stream is waited out)", v)
	}
	close(release)
	testutil.Eventually(t, 45*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs) == n
	}, "not every job finished after the stream had room again")
	mu.Lock()
	defer mu.Unlock()
	for id, k := range runs {
		if k != 1 {
			t.Errorf("job %s: continuation ran %d times", id, k)
		}
	}
	if got := ct.total(); got != n {
		t.Errorf("target saw %d requests for %d jobs: a held result must not make the fetch again", got, n)
	}
}
