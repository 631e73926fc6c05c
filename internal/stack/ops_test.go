package stack

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// scrape reads url (a Prometheus text exposition) into series → value,
// each series written as in the exposition: name{label="v",...}.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: line %q: %v", url, line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// getStatus returns the status code and body of GET url.
func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsMoveAsJobsFlow(t *testing.T) {
	st := startStack(t, nil)
	metricsURL := st.OriginHTTP() + "/metrics"
	before := scrape(t, metricsURL)

	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 3; i++ {
		if _, res := c.Fetch("ok-"+itoa(i), st.TargetURL()+"/delay?ms=2", nil); res.Type != "result" {
			t.Fatalf("fetch: got %+v, want result", res)
		}
	}
	if _, res := c.Fetch("bad", "ftp://example.com/", nil); res.Code != "invalid_url" {
		t.Fatalf("got %+v, want invalid_url", res)
	}
	if _, res := c.Fetch("blocked", "http://127.0.0.1:1/", nil); res.Code != "blocked_destination" {
		t.Fatalf("got %+v, want blocked_destination", res)
	}
	resp, err := http.Post(st.OriginHTTP()+"/call/echo?via=nats", "application/octet-stream", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/call/echo: status %d", resp.StatusCode)
	}

	// The client has its last frame before that executor has counted the
	// job done: wait for it, then read everything.
	var after map[string]float64
	testutil.Eventually(t, 10*time.Second, func() bool {
		after = scrape(t, metricsURL)
		return after[`pipeline_executor_inflight`] == 0
	})
	deltas := map[string]float64{
		`pipeline_origin_fetches_total{code="",outcome="result"}`:                   3,
		`pipeline_origin_fetches_total{code="invalid_url",outcome="error"}`:         1,
		`pipeline_origin_fetches_total{code="blocked_destination",outcome="error"}`: 1,
		`pipeline_origin_fetches_total{code="internal",outcome="error"}`:            0,
		`pipeline_origin_jobs_enqueued_total`:                                       4, // invalid_url is refused before
		`pipeline_phase_seconds_count{phase="enqueue"}`:                             4,
		`pipeline_phase_seconds_count{phase="queue"}`:                               4,
		`pipeline_phase_seconds_count{phase="fetch"}`:                               4,
		`pipeline_phase_seconds_count{phase="total"}`:                               4,
		`pipeline_executor_jobs_total{code="",outcome="result"}`:                    3,
		`pipeline_executor_jobs_total{code="blocked_destination",outcome="error"}`:  1,
		`pipeline_executor_fetch_seconds_count`:                                     4,
		`pipeline_executor_redeliveries_total`:                                      0,
		`pipeline_origin_duplicates_suppressed_total`:                               0,
		`pipeline_rpc_calls_total{fn="echo",outcome="ok",via="nats"}`:               1,
		`pipeline_rpc_seconds_count{fn="echo",via="nats"}`:                          1,
		`pipeline_rpc_served_total{fn="echo",outcome="ok",via="nats"}`:              1,
	}
	for series, want := range deltas {
		a, ok := after[series]
		if !ok {
			t.Errorf("%s: missing from /metrics", series)
			continue
		}
		if got := a - before[series]; got != want {
			t.Errorf("%s: moved by %v, want %v", series, got, want)
		}
	}
	gauges := map[string]float64{
		`pipeline_origin_ws_connections`:   1,
		`pipeline_origin_inflight_fetches`: 0,
		`pipeline_origin_executors_seen`:   1,
		`pipeline_executor_inflight`:       0,
		`pipeline_jobs_queue_depth`:        0,
	}
	for series, want := range gauges {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for series := range after {
		for _, leak := range []string{"127.0.0.1", "://", "job=", "origin=", "executor=", "id="} {
			if strings.Contains(series, leak) {
				t.Errorf("series %s has a high-cardinality label (%q)", series, leak)
			}
		}
	}

	// The runtime's HTTP side serves the same registry and its own probes.
	if code, body := getStatus(t, st.RuntimeHTTP()+"/metrics"); code != http.StatusOK || !strings.Contains(body, "pipeline_rpc_served_total") {
		t.Errorf("runtime /metrics: %d, want 200 with pipeline_rpc_served_total", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := getStatus(t, st.RuntimeHTTP()+p); code != http.StatusOK {
			t.Errorf("runtime %s: %d, want 200", p, code)
		}
	}
	if code, _ := getStatus(t, st.RuntimeHTTP()+"/nope"); code != http.StatusNotFound {
		t.Errorf("runtime /nope: %d, want 404", code)
	}
}

// TestReadinessFlipsWhenNATSGoesAway runs an origin and, in a second
// process-like stack, an executor with its ops listener against an
// external NATS server, stops the server, and starts it again.
func TestReadinessFlipsWhenNATSGoesAway(t *testing.T) {
	dir := t.TempDir()
	start := func(port int) *broker.Server {
		srv, err := startServer(broker.ServerConfig{Port: port, MonitorPort: -2, StoreDir: dir, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatalf("start nats on port %d: %v", port, err)
		}
		return srv
	}
	srv := start(-1)
	url := srv.ClientURL()
	port, err := strconv.Atoi(url[strings.LastIndexByte(url, ':')+1:])
	if err != nil {
		t.Fatalf("nats url %s: %v", url, err)
	}
	running := true
	t.Cleanup(func() {
		if running {
			_ = srv.Shutdown(context.Background())
		}
	})
	external := func(c *config.Config) {
		c.NATS.Embedded = false
		c.NATS.URL = url
	}
	org := startStack(t, func(c *config.Config) {
		external(c)
		c.Executor.Count = 0
	})
	exe := startStack(t, func(c *config.Config) {
		external(c)
		c.Origin.Enabled = false
		c.Runtime.Enabled = false
		c.Target.Enabled = false
	})
	if exe.OpsAddr() == "" {
		t.Fatal("executor-only stack has no ops listener")
	}
	probes := []string{org.OriginHTTP() + "/readyz", "http://" + exe.OpsAddr() + "/readyz"}
	waitFor := func(want int) {
		t.Helper()
		for _, u := range probes {
			deadline := time.Now().Add(15 * time.Second)
			for {
				code, body := getStatus(t, u)
				if code == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %d %q, want %d", u, code, body, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	waitFor(http.StatusOK)
	for _, u := range []string{org.OriginHTTP() + "/healthz", "http://" + exe.OpsAddr() + "/healthz"} {
		if code, _ := getStatus(t, u); code != http.StatusOK {
			t.Errorf("%s: %d, want 200", u, code)
		}
	}
	if code, body := getStatus(t, "http://"+exe.OpsAddr()+"/metrics"); code != http.StatusOK || !strings.Contains(body, "pipeline_executor_inflight") {
		t.Errorf("executor /metrics: %d, want 200 with pipeline_executor_inflight", code)
	}

	_ = srv.Shutdown(context.Background())
	running = false
	waitFor(http.StatusServiceUnavailable)
	// Alive all the same.
	if code, _ := getStatus(t, org.OriginHTTP()+"/healthz"); code != http.StatusOK {
		t.Errorf("origin /healthz with NATS away: %d, want 200", code)
	}

	srv = start(port)
	running = true
	waitFor(http.StatusOK)
	// The stacks' cleanups run before the server's (LIFO): they stop while
	// NATS is there.
}
