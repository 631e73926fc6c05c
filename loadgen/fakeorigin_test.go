package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// This file holds a small origin that speaks the client side of
// PROTOCOL.md §1 over a real WebSocket and performs real HTTP fetches, so
// the engine is tested against real sockets without the whole pipeline.

// fakeOrigin is a minimal §1 origin. Fetches of a URL whose path is /drop
// get no reply at all; /instant gets a result without any HTTP call.
type fakeOrigin struct {
	srv    *httptest.Server
	client *http.Client
	// closeAfter, when positive, closes each connection after that many
	// start-fetch frames.
	closeAfter int

	frames atomic.Int64 // start-fetch frames received
	conns  atomic.Int64
	wg     sync.WaitGroup
}

func newFakeOrigin(t testing.TB, closeAfter int) *fakeOrigin {
	t.Helper()
	f := &fakeOrigin{
		closeAfter: closeAfter,
		client:     &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}, Timeout: 10 * time.Second},
	}
	up := websocket.Upgrader{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.conns.Add(1)
		f.serve(ws)
	}))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.wg.Wait()
		f.client.CloseIdleConnections()
	})
	return f
}

// URL is the WebSocket URL of the fake origin.
func (f *fakeOrigin) URL() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws" }

type fakeStart struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	URL  string `json:"url"`
}

func (f *fakeOrigin) serve(ws *websocket.Conn) {
	defer ws.Close()
	var mu sync.Mutex
	send := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		_ = ws.WriteJSON(v)
	}
	send(map[string]string{"type": "hello", "origin": "fake", "version": "test"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		f.frames.Add(1)
		n++
		if f.closeAfter > 0 && n > f.closeAfter {
			return
		}
		var req fakeStart
		if err := json.Unmarshal(msg, &req); err != nil || req.Type != "start-fetch" {
			send(map[string]string{"type": "error", "id": req.ID, "code": "bad_request", "message": "bad frame"})
			continue
		}
		u, err := url.Parse(req.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			send(map[string]string{"type": "error", "id": req.ID, "code": "invalid_url", "message": "bad url"})
			continue
		}
		received := time.Now()
		send(map[string]string{"type": "enqueued", "id": req.ID, "job": "j-" + req.ID})
		if u.Path == "/drop" {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.fetch(ctx, req, u, received, send)
		}()
	}
}

func (f *fakeOrigin) fetch(ctx context.Context, req fakeStart, u *url.URL, received time.Time, send func(any)) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if u.Path == "/instant" {
		send(map[string]any{"type": "result", "id": req.ID, "status": 200, "body": "",
			"timing": map[string]float64{"enqueue_ms": 0.01, "queue_ms": 0.01, "fetch_ms": 0.01, "total_ms": ms(time.Since(received))}})
		return
	}
	t0 := time.Now()
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, req.URL, nil)
	resp, err := f.client.Do(hreq)
	if err != nil {
		send(map[string]string{"type": "error", "id": req.ID, "code": "fetch_failed", "message": err.Error()})
		return
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	fetch := time.Since(t0)
	send(map[string]any{"type": "result", "id": req.ID, "job": "j-" + req.ID, "status": resp.StatusCode,
		"headers": map[string]string{"content-type": resp.Header.Get("Content-Type")}, "body": string(body),
		"body_encoding": "utf8", "truncated": false, "attempt": 1, "executor": "fake",
		"timing": map[string]float64{"enqueue_ms": ms(t0.Sub(received)) / 2, "queue_ms": ms(t0.Sub(received)) / 2,
			"fetch_ms": ms(fetch), "total_ms": ms(time.Since(received))}})
}

// testTarget is an HTTP target like PROTOCOL.md §4's that also tracks the
// largest number of requests it had in flight at once.
type testTarget struct {
	srv         *httptest.Server
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	hits        atomic.Int64
}

func newTestTarget(t testing.TB) *testTarget {
	t.Helper()
	tt := &testTarget{}
	tt.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tt.hits.Add(1)
		n := tt.inFlight.Add(1)
		defer tt.inFlight.Add(-1)
		for {
			m := tt.maxInFlight.Load()
			if n <= m || tt.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		switch r.URL.Path {
		case "/delay":
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-r.Context().Done():
			}
			_, _ = io.WriteString(w, "ok")
		case "/status":
			code, _ := strconv.Atoi(r.URL.Query().Get("code"))
			w.WriteHeader(code)
		default:
			_, _ = io.WriteString(w, "hello")
		}
	}))
	t.Cleanup(tt.srv.Close)
	return tt
}

// closedPortURL returns an http URL on 127.0.0.1 where nothing listens.
func closedPortURL(t testing.TB) string {
	t.Helper()
	return "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
}

// noLeaks fails the test if goroutines started during it are still running
// once all its cleanups have run.
func noLeaks(t *testing.T) {
	t.Helper()
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}

// checkCounts asserts the counting invariants of every report.
func checkCounts(t *testing.T, r *Report) {
	t.Helper()
	if r.Requests != r.OK+r.Errors {
		t.Errorf("requests %d != ok %d + errors %d", r.Requests, r.OK, r.Errors)
	}
	var byCode int64
	for _, n := range r.ErrorsByCode {
		byCode += n
	}
	if byCode != r.Errors {
		t.Errorf("errors_by_code sums to %d, errors is %d (%v)", byCode, r.Errors, r.ErrorsByCode)
	}
	var byStatus int64
	for _, n := range r.StatusCounts {
		byStatus += n
	}
	if byStatus != r.OK {
		t.Errorf("status_counts sums to %d, ok is %d", byStatus, r.OK)
	}
	var tl int64
	for _, p := range r.Timeline {
		tl += p.OK + p.Errors
	}
	if tl != r.Requests {
		t.Errorf("timeline sums to %d, requests is %d", tl, r.Requests)
	}
	if got := r.LatencyHistogram().Count(); got != r.OK {
		t.Errorf("latency histogram holds %d values, ok is %d", got, r.OK)
	}
}

// checkMonotone asserts p50 ≤ p95 ≤ p99 ≤ p99.9 ≤ max.
func checkMonotone(t *testing.T, name string, s LatencySummary) {
	t.Helper()
	v := []float64{s.P50, s.P95, s.P99, s.P999, s.Max}
	for i := 1; i < len(v); i++ {
		if v[i] < v[i-1] {
			t.Errorf("%s percentiles not monotone: %+v", name, s)
			return
		}
	}
	if s.Mean < 0 || (s.Max > 0 && s.Mean > s.Max) {
		t.Errorf("%s mean %v outside [0, max]", name, s.Mean)
	}
}
