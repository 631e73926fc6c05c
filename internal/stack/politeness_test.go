package stack

import (
	"fmt"
	"testing"

	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestPolitenessEndToEnd runs the whole pipeline with per-role NATS users
// (the executor's permissions must cover the shared rates bucket) and a
// rate on the test target's host: fetches to it go through the leased
// schedule, and a 503 with Retry-After comes back as the 200 that followed
// it, with the attempts and the time waited in the result frame.
func TestPolitenessEndToEnd(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.NATS.Auth = authConfig()
		c.Executor.Destinations = []executor.Destination{{Host: "127.0.0.1", Rate: 50, Burst: 5}}
	})
	c := testutil.DialWS(t, st.OriginWS())
	for i := range 10 {
		_, res := c.Fetch(fmt.Sprintf("r%d", i), st.TargetURL()+"/limited?rate=50", nil)
		if res.Type != "result" || res.Status != 200 {
			t.Fatalf("rate-limited fetch %d: %+v", i, res)
		}
	}
	_, res := c.Fetch("ra", st.TargetURL()+"/flaky?key=ra&fail=1&retry_after=1", nil)
	if res.Type != "result" || res.Status != 200 || res.Attempts != 2 || res.Timing == nil || res.Timing.WaitedMS < 1000 {
		t.Fatalf("Retry-After fetch: %+v timing %+v, want 200 after 2 attempts and >= 1000 ms waited", res, res.Timing)
	}
}
