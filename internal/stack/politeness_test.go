package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// TestRateLimitAcrossExecutorProcesses: two `pipeline executor` OS
// processes with the same destination rate share it through the KV
// schedule. 120 fetches at 40/s take at least (120−1)/40 s all together;
// two processes limiting on their own would take half that. The target's
// own limit at that rate answers no 429.
func TestRateLimitAcrossExecutorProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the pipeline binary and runs executor processes: skipped with -short")
	}
	bin := buildPipeline(t)
	st := startStack(t, func(c *config.Config) { c.Executor.Count = 0 })
	cfgFile := filepath.Join(t.TempDir(), "rate.yaml")
	yaml := "executor:\n  destinations:\n    - {host: \"127.0.0.1\", rate: 40, burst: 1}\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"p1", "p2"} {
		startRateProcess(t, bin, st, cfgFile, id).waitReady(t, 30*time.Second)
	}
	c := testutil.DialWS(t, st.OriginWS())
	const n, rate = 120, 40
	start := time.Now()
	for i := range n {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": fmt.Sprintf("f%d", i), "url": st.TargetURL() + "/limited?rate=40"})
	}
	by := map[string]int{}
	for got := 0; got < n; {
		f := c.Read()
		if !f.Final() {
			continue
		}
		got++
		if f.Type != "result" || f.Status != 200 {
			t.Fatalf("fetch %s: %+v, want 200", f.ID, f)
		}
		by[f.Executor]++
	}
	took := time.Since(start)
	t.Logf("%d fetches at %d/s over two processes in %v; by executor %v", n, rate, took, by)
	if min := time.Duration(n-1) * time.Second / rate * 9 / 10; took < min {
		t.Errorf("took %v, want at least %v: the processes did not share the rate", took, min)
	}
}

// startRateProcess starts `pipeline executor` with the config file cfgFile.
func startRateProcess(t *testing.T, bin string, st *Stack, cfgFile, id string) *pipelineProcess {
	t.Helper()
	return startExecutorProcess(t, bin, st, st.NATSURL(), id, 0, "--config", cfgFile)
}
