package executor

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	testtarget "github.com/pipeline-dev/pipeline/internal/target"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// hostOfURL is the host:port of a test server URL.
func hostOfURL(t *testing.T, u string) string {
	t.Helper()
	return u[len("http://"):]
}

// A 503 with Retry-After: 2 makes the job wait 2 s, holding no executor
// slot (a job to another host runs meanwhile on the one slot there is) and
// using up no delivery (the wait is longer than AckWait × MaxDeliver), then
// run again: one 200 result, attempts 2, waited ≥ 2 s.
func TestRetryAfterWaitsWithoutSlotOrDelivery(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{AckWait: 600 * time.Millisecond, MaxDeliver: 2})
	flaky := httptest.NewServer(testtarget.Handler())
	t.Cleanup(flaky.Close)
	other := fastHost(t)
	m := metrics.New()
	h.executor(Config{Concurrency: 1, Retry: RetryPolicy{Attempts: 3}, Metrics: m})

	h.enqueue("o1", "ra", flaky.URL+"/flaky?key=ra&fail=1&retry_after=2", 5*time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool {
		v, _ := testutil.MetricValue(t, m.Gatherer(), MetricWaiting, map[string]string{LabelReason: WaitRetryAfter})
		return v == 1
	}, "the job never waited for its Retry-After")
	start := time.Now()
	h.enqueue("o1", "other", other.URL+"/", 5*time.Second)
	if !h.waitResults([]string{"other"}, 10*time.Second) {
		t.Fatal("no result for the other host's job")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the other host's job took %v: it waited for the held job's slot", d)
	}
	if r, _ := h.result("ra"); len(r) != 0 {
		t.Fatalf("the held job finished before the other one: %+v", r[0])
	}
	if !h.waitResults([]string{"ra"}, 15*time.Second) {
		t.Fatal("no result for the Retry-After job")
	}
	rs, _ := h.result("ra")
	if !testutil.WaitFor(time.Second, func() bool { rs, _ = h.result("ra"); return len(rs) > 1 }) && len(rs) != 1 {
		t.Fatalf("%d results, want 1", len(rs))
	}
	r := rs[0]
	if r.Error != nil || r.Status != http.StatusOK {
		t.Fatalf("result %d %v, want 200", r.Status, r.Error)
	}
	if r.Attempt != 1 || r.Attempts != 2 {
		t.Errorf("delivery %d attempts %d, want delivery 1 (waiting costs none) and 2 attempts", r.Attempt, r.Attempts)
	}
	if w := time.Duration(r.WaitedNanos); w < 2*time.Second || w > 6*time.Second {
		t.Errorf("waited %v, want about 2 s", w)
	}
	g := m.Gatherer()
	testutil.WantMetric(t, g, MetricRedeliveriesTotal, nil, 0)
	testutil.WantMetric(t, g, MetricHeldTotal, map[string]string{LabelReason: WaitRetryAfter}, 1)
	testutil.WantMetric(t, g, MetricFetchRetriesTotal, nil, 0) // not retried at once
}

// Beyond retry_after_max the 429/503 is the result, unchanged.
func TestRetryAfterBeyondMaxIsTheResult(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	flaky := httptest.NewServer(testtarget.Handler())
	t.Cleanup(flaky.Close)
	h.executor(Config{Concurrency: 2, RetryAfterMax: 2500 * time.Millisecond})
	h.enqueue("o1", "long", flaky.URL+"/flaky?key=long&fail=9&retry_after=3600", 5*time.Second)
	h.enqueue("o1", "twice", flaky.URL+"/flaky?key=twice&fail=9&status=429&retry_after=1", 5*time.Second)
	if !h.waitResults([]string{"long", "twice"}, 20*time.Second) {
		t.Fatal("no results")
	}
	long, _ := h.result("long")
	if r := long[0]; r.Status != 503 || r.Headers["retry-after"] != "3600" || r.Attempts != 1 || r.WaitedNanos != 0 {
		t.Errorf("long: status %d retry-after %q attempts %d waited %v, want the 503 at once",
			r.Status, r.Headers["retry-after"], r.Attempts, time.Duration(r.WaitedNanos))
	}
	twice, _ := h.result("twice")
	// 1 s + 1 s fit in 2.5 s, a third second does not: 3 requests.
	if r := twice[0]; r.Status != 429 || r.Attempts != 3 || time.Duration(r.WaitedNanos) < 2*time.Second {
		t.Errorf("twice: status %d attempts %d waited %v, want 429 after 3 attempts and 2 s",
			r.Status, r.Attempts, time.Duration(r.WaitedNanos))
	}
}

// Two executors (each with its own NATS connection and rate limiter, like
// two processes) share a host's rate through the KV schedule: together they
// stay within it, and the rate-limited target answers no 429.
func TestRateLimitHoldsAcrossExecutors(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	var mu sync.Mutex
	var times []time.Time
	limited := testtarget.Handler()
	tg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		limited.ServeHTTP(w, r)
	}))
	t.Cleanup(tg.Close)
	const rate, n = 20, 60
	dest := []Destination{{Host: hostOfURL(t, tg.URL), Rate: rate, Burst: 1}}
	m := metrics.New()
	h.executor(Config{ID: "e1", Concurrency: 32, Destinations: dest, Metrics: m})
	// One registry for both (as executors of one process share it): on a
	// busy box one executor may take every job, and the lease must show.
	h.executor(Config{ID: "e2", Concurrency: 32, Destinations: dest, Metrics: m})
	var ids []string
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		ids = append(ids, id)
		h.enqueue("o1", id, tg.URL+"/limited?rate=20", 10*time.Second)
	}
	if !h.waitResults(ids, 60*time.Second) {
		t.Fatal("not every job got a result")
	}
	by := map[string]int{}
	for _, id := range ids {
		rs, _ := h.result(id)
		if rs[0].Status != http.StatusOK {
			t.Errorf("job %s: status %d, want 200 (the target limits at the same rate)", id, rs[0].Status)
		}
		by[rs[0].Executor]++
	}
	if by["e1"] == 0 || by["e2"] == 0 {
		t.Logf("jobs by executor: %v (one executor took them all)", by)
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	span := times[len(times)-1].Sub(times[0])
	// n requests at rate/s with a burst of 1 need (n-1)/rate s; a slow box
	// only makes it longer. The lower bound is the rate limit at work.
	if min := time.Duration(n-1)*time.Second*9/10/rate - 50*time.Millisecond; span < min {
		t.Errorf("%d requests in %v, want at least %v at %d/s", n, span, min, rate)
	}
	// No second holds more than rate + burst + a little scheduling slack.
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Second {
			j++
		}
		if j-i > rate+3 {
			t.Errorf("%d requests within one second from %v, want at most %d", j-i, times[i].Sub(times[0]), rate+3)
			break
		}
	}
	v, _ := testutil.MetricValue(t, m.Gatherer(), MetricRateTokensLeasedTotal, nil)
	if v == 0 {
		t.Error("no rate tokens leased")
	}
}

// A host refusing connections opens its circuit after `failures`; its jobs
// then end at once with circuit_open; after the cooldown a probe goes and,
// the host being back, closes the circuit.
func TestCircuitOpensAndCloses(t *testing.T) {
	h := newHarness(t, broker.StreamsConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refuses connections until the host comes back
	m := metrics.New()
	e := h.executor(Config{Concurrency: 1, Retry: RetryPolicy{Attempts: 1}, Metrics: m,
		Circuit: CircuitConfig{Failures: 3, Cooldown: 700 * time.Millisecond}})
	url := "http://" + addr + "/"
	for i := range 3 {
		id := fmt.Sprintf("down%d", i)
		h.enqueue("o1", id, url, time.Second)
		if !h.waitResults([]string{id}, 10*time.Second) {
			t.Fatal("no result")
		}
		if rs, _ := h.result(id); rs[0].Error == nil || rs[0].Error.Code != broker.CodeFetchFailed {
			t.Fatalf("%s: %+v, want fetch_failed", id, rs[0].Error)
		}
	}
	testutil.WantMetric(t, m.Gatherer(), MetricCircuitsOpen, nil, 1)
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("open%d", i)
		ids = append(ids, id)
		h.enqueue("o1", id, url, time.Second)
	}
	if !h.waitResults(ids, 10*time.Second) {
		t.Fatal("no results while open")
	}
	for _, id := range ids {
		rs, _ := h.result(id)
		if rs[0].Error == nil || rs[0].Error.Code != broker.CodeCircuitOpen || rs[0].Attempts != 0 {
			t.Fatalf("%s: %+v attempts %d, want circuit_open without a request", id, rs[0].Error, rs[0].Attempts)
		}
	}
	testutil.WantMetric(t, m.Gatherer(), MetricHeldTotal, map[string]string{LabelReason: WaitCircuit}, 20)
	top := MetricsOf(m).TopHosts(5)
	if len(top) == 0 || top[0].Host != addr || top[0].Circuit != "open" || top[0].CircuitRefused != 20 {
		t.Errorf("top hosts %+v, want %s open with 20 refused", top, addr)
	}
	// The host comes back; after the cooldown the next job is the probe.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	back := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("back")) })}
	go func() { _ = back.Serve(ln2) }()
	t.Cleanup(func() { _ = back.Close() })
	testutil.Eventually(t, 10*time.Second, func() bool { return !e.pol.circuits.isOpen(addr) }, "circuit still open after its cooldown")
	h.enqueue("o1", "probe", url, time.Second)
	if !h.waitResults([]string{"probe"}, 10*time.Second) {
		t.Fatal("no probe result")
	}
	if rs, _ := h.result("probe"); rs[0].Status != 200 {
		t.Fatalf("probe: %d %v, want 200", rs[0].Status, rs[0].Error)
	}
	testutil.WantMetric(t, m.Gatherer(), MetricCircuitsOpen, nil, 0)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2", 2 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"99999999999", 24 * time.Hour, true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if d, ok := retryAfterOf(&Response{Status: 429}, now); !ok || d != defaultRetryAfter {
		t.Errorf("429 without Retry-After: %v %v", d, ok)
	}
	if _, ok := retryAfterOf(&Response{Status: 503}, now); ok {
		t.Error("503 without Retry-After waits; want the normal 503 handling")
	}
	if _, ok := retryAfterOf(&Response{Status: 500, Headers: map[string]string{"retry-after": "1"}}, now); ok {
		t.Error("500 with Retry-After waits")
	}
}

func TestCircuitStates(t *testing.T) {
	now := time.Unix(100, 0)
	var changes []bool
	c := newCircuits(CircuitConfig{Failures: 2, Cooldown: time.Second}, func(_ string, open bool) { changes = append(changes, open) })
	c.now = func() time.Time { return now }
	c.record("h", true)
	c.record("h", false) // a success resets the streak
	c.record("h", true)
	if !c.allow("h") {
		t.Fatal("open after 1 consecutive failure")
	}
	c.record("h", true)
	if c.allow("h") || !c.isOpen("h") {
		t.Fatal("not open after 2 consecutive failures")
	}
	now = now.Add(time.Second)
	if !c.allow("h") {
		t.Fatal("no probe after the cooldown")
	}
	if c.allow("h") {
		t.Fatal("a second request while the probe is out")
	}
	c.record("h", true) // the probe failed
	if c.allow("h") {
		t.Fatal("allowed right after a failed probe")
	}
	now = now.Add(time.Second)
	if !c.allow("h") {
		t.Fatal("no second probe")
	}
	c.record("h", false)
	if !c.allow("h") || c.isOpen("h") || len(c.states()) != 0 {
		t.Fatal("not closed after a good probe")
	}
	if fmt.Sprint(changes) != "[true false]" {
		t.Errorf("changes %v, want [true false]", changes)
	}
	if newCircuits(CircuitConfig{Failures: -1}, nil) != nil {
		t.Error("failures -1 does not disable the breaker")
	}
}

func TestDestinationLookupAndConcurrency(t *testing.T) {
	d := newDestinations([]Destination{{Host: "API.example.com", Concurrency: 4}, {Host: "api.example.com:8443", Rate: 5}})
	if got, ok := d.of("api.example.com:443"); !ok || got.Concurrency != 4 {
		t.Errorf("host-only entry: %+v %v", got, ok)
	}
	if got, ok := d.of("api.example.com:8443"); !ok || got.Rate != 5 || got.Burst != 1 {
		t.Errorf("host:port entry: %+v %v", got, ok)
	}
	if _, ok := d.of("other.example:443"); ok {
		t.Error("unlisted host found")
	}
	g := newHostGateFor(Config{Concurrency: 8, PerHostConcurrency: 2, Destinations: []Destination{{Host: "a.example", Concurrency: 3}}})
	for i, want := range []bool{true, true, true, false} {
		if got := g.take("a.example:80"); got != want {
			t.Errorf("a.example take %d: %v, want %v", i, got, want)
		}
	}
	for i, want := range []bool{true, true, false} {
		if got := g.take("b.example:80"); got != want {
			t.Errorf("b.example take %d: %v, want %v", i, got, want)
		}
	}
	if newHostGateFor(Config{Concurrency: 8}) != nil {
		t.Error("a gate without any cap")
	}
	if g := newHostGateFor(Config{Concurrency: 8, Destinations: []Destination{{Host: "a.example", Concurrency: 1}}}); g == nil || g.limitOf("b.example:80") < 1<<30 {
		t.Error("per-host cap 0 with one destination cap: other hosts must stay uncapped")
	}
}

// BenchmarkPoliteHotPath is what politeness adds to a job whose host has
// no destination setting and answers well: the hold check before the
// slot, and the circuit check and record around the fetch.
func BenchmarkPoliteHotPath(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Concurrency = 256
	e := &Executor{cfg: cfg, pol: newPolite(cfg, nil)}
	resp := &Response{Status: http.StatusOK}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		t := &task{host: "api.example.com:443"}
		for pb.Next() {
			t.p.host = ""
			if e.holdForHost(t) {
				b.Fatal("held")
			}
			if !e.pol.circuits.allow(t.p.host) {
				b.Fatal("circuit open")
			}
			if failed, known := hostOutcome(resp, nil); known {
				e.pol.circuits.record(t.p.host, failed)
			}
		}
	})
}
