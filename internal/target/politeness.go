package target

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Endpoints for the destination politeness tests (issue #15): a
// rate-limited endpoint and one that fails its first requests. Their state
// lives in one politeness value per Handler call, so two targets (two
// tests) never share counters.

// Bounds on the state a caller can make the target keep.
const (
	maxLimitedBuckets = 1024
	maxFlakyKeys      = 100_000
	maxLimitedRate    = 1_000_000
	maxFlakyFail      = 1_000_000
)

// politeness holds the state of /limited and /flaky. It is safe for
// concurrent use.
type politeness struct {
	mu      sync.Mutex
	buckets map[string]*bucket // /limited, by bucket name or rate
	seen    map[string]int     // /flaky, requests seen per key
	now     func() time.Time
}

// bucket is a token bucket of rate tokens refilled at rate per second.
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newPoliteness() *politeness {
	return &politeness{buckets: map[string]*bucket{}, seen: map[string]int{}, now: time.Now}
}

// limited answers /limited?rate=N[&bucket=B]: 200 while the bucket has a
// token, else 429 with Retry-After: 1. Requests with the same bucket (by
// default: the same rate) share it, whoever sends them. The bucket holds N
// tokens and gains N per second, so it lets N requests through in any
// second after an idle one, and N per second on average.
func (p *politeness) limited(w http.ResponseWriter, r *http.Request) {
	rate, err := intParam(r, "rate", 0, 1, maxLimitedRate)
	if err != nil || r.URL.Query().Get("rate") == "" {
		http.Error(w, "rate must be an integer in 1..1000000", http.StatusBadRequest)
		return
	}
	name := r.URL.Query().Get("bucket")
	if name == "" {
		name = "rate=" + strconv.Itoa(rate)
	}
	now := p.now()
	p.mu.Lock()
	b := p.buckets[name]
	if b == nil || b.rate != float64(rate) {
		if len(p.buckets) >= maxLimitedBuckets {
			clear(p.buckets)
		}
		b = &bucket{rate: float64(rate), tokens: float64(rate), last: now}
		p.buckets[name] = b
	}
	b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprintf(w, "rate limit %d/s exceeded\n", rate)
		return
	}
	fmt.Fprintf(w, "ok within %d/s\n", rate)
}

// flaky answers /flaky?key=K&fail=N[&status=S][&retry_after=RA][&mode=reset]:
// the first N requests with key K fail, later ones get 200. A failure is
// status S (default 503, 400..599) with a Retry-After: RA header when
// retry_after is given (seconds, or an HTTP-date), or with mode=reset a
// connection closed without a response.
func (p *politeness) flaky(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("key")
	fail, err := intParam(r, "fail", 1, 0, maxFlakyFail)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	code, err := intParam(r, "status", http.StatusServiceUnavailable, 400, 599)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	if _, ok := p.seen[key]; !ok && len(p.seen) >= maxFlakyKeys {
		clear(p.seen)
	}
	p.seen[key]++
	n := p.seen[key]
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if n > fail {
		fmt.Fprintf(w, "ok after %d failures (request %d)\n", fail, n)
		return
	}
	if q.Get("mode") == "reset" {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
	}
	if ra := q.Get("retry_after"); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "failure %d of %d\n", n, fail)
}
