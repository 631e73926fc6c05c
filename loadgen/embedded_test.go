package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/stack"
	"github.com/pipeline-dev/pipeline/internal/stacktest"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

// These tests run the load generator against the real pipeline: embedded
// NATS with JetStream, origin, executor and test target, in-process on free
// 127.0.0.1 ports.

// startStack starts an ephemeral pipeline; adjust, if non-nil, changes its
// config first. The stack is shut down when the test ends.
func startStack(t *testing.T, adjust func(*config.Config)) *stack.Stack {
	t.Helper()
	return stacktest.Start(t, adjust, testLogger(t))
}

func TestEmbeddedClosedLoop(t *testing.T) {
	noLeaks(t)
	s := startStack(t, nil)
	rep, err := Run(context.Background(), Config{
		Origins:        []string{s.OriginWS()},
		TargetURL:      s.TargetURL() + "/delay?ms=0",
		Concurrency:    20,
		Requests:       400,
		WarmupRequests: 40,
		Timeout:        10 * time.Second,
		Logger:         testLogger(t),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkCounts(t, rep)
	if rep.Requests != 400 || rep.OK != 400 {
		t.Fatalf("requests %d ok %d errors %v, want 400 ok", rep.Requests, rep.OK, rep.ErrorsByCode)
	}
	if rep.StatusCounts["200"] != 400 {
		t.Errorf("status_counts %v, want 200: 400", rep.StatusCounts)
	}
	checkMonotone(t, "latency", rep.LatencyMS)
	for name, s := range map[string]LatencySummary{
		"enqueue": rep.Phases.Enqueue, "execution": rep.Phases.Execution, "origin_enqueue": rep.Phases.OriginEnqueue,
		"queue": rep.Phases.Queue, "fetch": rep.Phases.Fetch, "total": rep.Phases.Total,
	} {
		checkMonotone(t, name, s)
		if s.Max <= 0 {
			t.Errorf("phase %s is empty: %+v", name, s)
		}
	}
	// The origin's total cannot exceed what the client saw end to end.
	if rep.Phases.Total.P50 > rep.LatencyMS.P50 {
		t.Errorf("origin total p50 %v > end-to-end p50 %v", rep.Phases.Total.P50, rep.LatencyMS.P50)
	}
	if rep.Origins[0].OriginID == "" {
		t.Errorf("origin id not read from the hello frame: %+v", rep.Origins)
	}

	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	checkContractFields(t, m, false)
}

func TestEmbeddedRate(t *testing.T) {
	noLeaks(t)
	s := startStack(t, nil)
	const rate, n = 300.0, 150
	checkRate(t, rate, n, func() *Report {
		rep, err := Run(context.Background(), Config{
			Origins:     []string{s.OriginWS()},
			TargetURL:   s.TargetURL() + "/delay?ms=1",
			Rate:        rate,
			Requests:    n,
			Concurrency: 100,
			Logger:      testLogger(t),
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return rep
	})
}

func TestEmbeddedErrorsByCode(t *testing.T) {
	noLeaks(t)
	// Allow every port of 127.0.0.1 so a closed port fails at connect time
	// rather than at the destination policy.
	// The circuit breaker is off: 25 failures in a row would open it, and
	// the point here is each failure's own code.
	s := startStack(t, func(c *config.Config) {
		c.Executor.Policy.Allow = []string{"127.0.0.1"}
		c.Executor.Circuit.Failures = -1
	})
	tests := []struct {
		name       string
		url        string
		wantCode   string
		wantStatus string
	}{
		{"status 503 is a result", s.TargetURL() + "/status?code=503", "", "503"},
		{"closed port", closedPortURL(t) + "/x", "fetch_failed", ""},
		{"malformed url", "not a url", "invalid_url", ""},
		{"policy", "http://169.254.169.254/latest/meta-data", "blocked_destination", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Config{
				Origins:     []string{s.OriginWS()},
				TargetURL:   tc.url,
				Concurrency: 5,
				Requests:    25,
				Timeout:     10 * time.Second,
				Logger:      testLogger(t),
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkCounts(t, rep)
			if rep.Requests != 25 {
				t.Errorf("requests %d, want 25", rep.Requests)
			}
			if tc.wantCode != "" && rep.ErrorsByCode[tc.wantCode] != 25 {
				t.Errorf("errors_by_code %v (ok %d, samples %v), want %s: 25", rep.ErrorsByCode, rep.OK, rep.ErrorSamples, tc.wantCode)
			}
			if tc.wantStatus != "" && rep.StatusCounts[tc.wantStatus] != 25 {
				t.Errorf("status_counts %v errors %v, want %s: 25", rep.StatusCounts, rep.ErrorsByCode, tc.wantStatus)
			}
		})
	}
}

func TestEmbeddedSweepAndHTML(t *testing.T) {
	noLeaks(t)
	s := startStack(t, nil)
	sw, err := RunSweep(context.Background(), SweepConfig{
		Base: Config{
			Origins:   []string{s.OriginWS()},
			TargetURL: s.TargetURL() + "/delay?ms=5",
			Baseline:  true,
			Logger:    testLogger(t),
		},
		Levels: []int{1, 10, 50},
		Rounds: 2,
	})
	if err != nil {
		t.Fatalf("RunSweep: %v", err)
	}
	for _, r := range sw.Runs {
		checkCounts(t, r)
		if r.OK != r.Requests || r.AddedLatencyMS == nil {
			t.Errorf("level %d: ok %d of %d, added %v", r.Concurrency, r.OK, r.Requests, r.AddedLatencyMS)
		}
	}
	var buf bytes.Buffer
	if err := sw.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	checkSelfContained(t, buf.String())
	if got := strings.Count(buf.String(), "<svg"); got < 4 {
		t.Errorf("sweep HTML has %d charts, want 4", got)
	}
}

// TestEmbeddedKeyed runs keyed fetches twice: every fetch of a run has its
// own key (no duplicates), and a second run uses new keys (its nonce), so
// it fetches again rather than collecting the first run's results.
func TestEmbeddedKeyed(t *testing.T) {
	s := startStack(t, nil)
	for run := 1; run <= 2; run++ {
		rep, err := Run(context.Background(), Config{
			Origins:     []string{s.OriginWS()},
			TargetURL:   s.TargetURL() + "/delay?ms=0",
			Concurrency: 10,
			Requests:    200,
			Keyed:       true,
			Timeout:     10 * time.Second,
			Logger:      testLogger(t),
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkCounts(t, rep)
		if rep.OK != 200 {
			t.Fatalf("run %d: %d ok of 200, errors %v", run, rep.OK, rep.ErrorsByCode)
		}
		// The pipeline runs in this process: it, and loadgen, cost CPU.
		if rep.ProcessCPUPerFetchUS <= 0 {
			t.Errorf("run %d: process CPU per fetch %v, want > 0", run, rep.ProcessCPUPerFetchUS)
		}
	}
	testutil.WantMetric(t, s.Metrics().Gatherer(), origin.MetricDuplicateKeysTotal, nil, 0)
	testutil.WantMetric(t, s.Metrics().Gatherer(), origin.MetricJobsEnqueuedTotal, nil, 400)
	// Every job was named by a key: its id is a key's (broker.KeyJobID).
	rs, err := testutil.JetStream(t, s.Server()).Stream(context.Background(), broker.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(context.Background(), jetstream.WithSubjectFilter(broker.Subjects{}.ResultsFilter("o1")))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range info.State.Subjects {
		n++
		if id := strings.TrimPrefix(k, broker.Subjects{}.ResultOf("o1", "")); !broker.IsKeyJobID(id) {
			t.Fatalf("finished job %q was not named by a key", id)
		}
	}
	if n != 400 {
		t.Fatalf("%d finished jobs, want 400", n)
	}
}
