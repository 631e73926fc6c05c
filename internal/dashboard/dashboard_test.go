package dashboard

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/origin"
)

func TestQuantileInterpolatesInsideTheBucket(t *testing.T) {
	h := hist{upper: []float64{1, 2, 4}, cum: []uint64{0, 10, 10}, count: 10}
	cases := []struct {
		q    float64
		want float64
	}{
		{0.5, 1.5}, {0.1, 1.1}, {1, 2},
	}
	for _, c := range cases {
		got, ok := h.quantile(c.q)
		if !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, %v; want %v", c.q, got, ok, c.want)
		}
	}
	if _, ok := (hist{upper: []float64{1}, cum: []uint64{0}}).quantile(0.5); ok {
		t.Error("empty histogram: want no quantile")
	}
	// Everything above the last finite bound: report that bound.
	over := hist{upper: []float64{1, 2}, cum: []uint64{0, 0}, count: 5}
	if got, ok := over.quantile(0.99); !ok || got != 2 {
		t.Errorf("+Inf quantile = %v, %v; want 2", got, ok)
	}
}

func TestHistDelta(t *testing.T) {
	cur := hist{upper: []float64{1, 2}, cum: []uint64{5, 9}, count: 10}
	base := hist{upper: []float64{1, 2}, cum: []uint64{5, 6}, count: 6}
	d := cur.delta(base)
	if d.count != 4 || d.cum[0] != 0 || d.cum[1] != 3 {
		t.Errorf("delta = %+v, want count 4 cum [0 3]", d)
	}
	if z := cur.delta(hist{}); z.count != 10 || z.cum[1] != 9 {
		t.Errorf("delta from empty = %+v, want cur", z)
	}
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestStatsWindows(t *testing.T) {
	m := metrics.New()
	o := origin.MetricsOf(m)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	d, err := New(Config{Gatherer: m.Gatherer(), Title: "origin t", Started: clk.t, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.JobsTotal != 0 || st.JobsPerS != 0 || st.Title != "origin t" {
		t.Fatalf("idle stats %+v", st)
	}
	for _, p := range st.Phases {
		if p.P50MS != nil || p.Count != 0 {
			t.Fatalf("idle phase %+v, want no percentiles", p)
		}
	}

	// 20 fetches in the next 2 s, two of them errors.
	clk.t = clk.t.Add(2 * time.Second)
	for i := 0; i < 18; i++ {
		o.Result()
		o.Phases(time.Millisecond, time.Millisecond, 10*time.Millisecond, 12*time.Millisecond)
	}
	o.Error(broker.CodeInvalidURL)
	o.Error(broker.CodeTimeout)
	o.ConnOpened()
	o.ExecutorSeen("e1")
	e := executor.MetricsOf(m)
	e.Result()
	e.Error(broker.CodeTimeout)
	e.Redelivered()
	e.Waiting(executor.WaitHostCap, 3)
	e.Waiting(executor.WaitShare, 2)
	e.Backlog(map[string]uint64{"o1": 500, "o2": 7})
	st, err = d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.JobsTotal != 20 || st.ResultsTotal != 18 || st.ErrorsTotal != 2 {
		t.Errorf("totals %v/%v/%v, want 20/18/2", st.JobsTotal, st.ResultsTotal, st.ErrorsTotal)
	}
	if st.JobsPerS != 10 || st.RateWindowS != 2 {
		t.Errorf("jobs/s %v over %v s, want 10 over 2", st.JobsPerS, st.RateWindowS)
	}
	if st.ExecutorJobsTotal != 2 || st.RedeliveriesTotal != 1 {
		t.Errorf("executor jobs %v redeliveries %v, want 2 and 1", st.ExecutorJobsTotal, st.RedeliveriesTotal)
	}
	if st.Connections != 1 || st.ExecutorsSeen != 1 {
		t.Errorf("connections %v executors %v, want 1 and 1", st.Connections, st.ExecutorsSeen)
	}
	if st.ErrorsByCode["invalid_url"] != 1 || st.ErrorsByCode["timeout"] != 1 || len(st.ErrorsByCode) != 2 {
		t.Errorf("errors by code %v", st.ErrorsByCode)
	}
	if st.QueueDepth != nil {
		t.Errorf("queue depth %v without a queue reading, want null", *st.QueueDepth)
	}
	if st.WaitingHostCap != 3 || st.WaitingShare != 2 {
		t.Errorf("waiting host_cap %v share %v, want 3 and 2", st.WaitingHostCap, st.WaitingShare)
	}
	if len(st.OriginBacklog) != 2 || st.OriginBacklog["o1"] != 500 || st.OriginBacklog["o2"] != 7 {
		t.Errorf("origin backlog %v, want o1:500 o2:7", st.OriginBacklog)
	}
	byPhase := map[string]PhaseStats{}
	for _, p := range st.Phases {
		byPhase[p.Phase] = p
	}
	fetch := byPhase["fetch"]
	if fetch.Count != 18 || fetch.P50MS == nil || *fetch.P50MS < 7 || *fetch.P50MS > 15 {
		t.Errorf("fetch phase %+v, want 18 observations, p50 near 10 ms", fetch)
	}
	if len(st.Phases) != 4 || st.Phases[0].Phase != "enqueue" || st.Phases[3].Phase != "total" {
		t.Errorf("phases %+v, want enqueue..total in order", st.Phases)
	}

	// 40 s later with nothing new: no rate, no percentiles in the window.
	clk.t = clk.t.Add(40 * time.Second)
	d.Stats() // a reading inside the new window
	clk.t = clk.t.Add(time.Second)
	st, _ = d.Stats()
	if st.JobsPerS != 0 || st.JobsTotal != 20 {
		t.Errorf("idle again: jobs/s %v total %v, want 0 and 20", st.JobsPerS, st.JobsTotal)
	}
	for _, p := range st.Phases {
		if p.P50MS != nil {
			t.Errorf("idle again: phase %s p50 %v, want null", p.Phase, *p.P50MS)
		}
	}
	if n := len(d.snaps); n > 4 {
		t.Errorf("%d readings kept, want old ones pruned", n)
	}
}

func TestHandlers(t *testing.T) {
	m := metrics.New()
	origin.MetricsOf(m).Result()
	d, err := New(Config{Gatherer: m.Gatherer()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range d.Handlers() {
		mux.Handle(p, h)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "api/stats") || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if strings.Contains(rec.Body.String(), "http://") || strings.Contains(rec.Body.String(), "https://") {
		t.Error("the page refers to an external URL; it must be self-contained")
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", rec.Code)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/stats", nil))
	var st Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != 200 {
		t.Fatalf("GET /api/stats: %d %v", rec.Code, err)
	}
	if st.JobsTotal != 1 {
		t.Errorf("jobs_total %v, want 1", st.JobsTotal)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/stats", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/stats: %d, want 405", rec.Code)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a gatherer: want an error")
	}
}
