package target

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// maxTags bounds the tags a counter remembers.
const maxTags = 1 << 20

// counter counts requests per tag for /count and /seen, so tests can check
// that each fetch reached the target exactly once. One counter belongs to
// one Handler; it is safe for concurrent use.
type counter struct {
	mu sync.Mutex
	n  map[string]int64
}

func newCounter() *counter { return &counter{n: map[string]int64{}} }

// count serves /count?tag=X&ms=N: it counts the request under tag X when it
// arrives, then answers like /delay?ms=N. A request without a tag, or a new
// tag beyond maxTags, gets 400 or 503 and is not counted.
func (c *counter) count(w http.ResponseWriter, r *http.Request) {
	tag := r.URL.Query().Get("tag")
	if tag == "" || len(tag) > 256 {
		http.Error(w, "tag must be 1..256 bytes", http.StatusBadRequest)
		return
	}
	if _, err := intParam(r, "ms", 0, 0, int(maxDelay/time.Millisecond)); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	_, known := c.n[tag]
	if !known && len(c.n) >= maxTags {
		c.mu.Unlock()
		http.Error(w, "too many tags", http.StatusServiceUnavailable)
		return
	}
	c.n[tag]++
	c.mu.Unlock()
	delay(w, r)
}

// seen serves /seen?tag=X → {"tag":"X","count":N}, and /seen?prefix=P →
// {"counts":{"<tag>":N,...}} for every tag starting with P.
func (c *counter) seen(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag := q.Get("tag"); tag != "" {
		_ = json.NewEncoder(w).Encode(map[string]any{"tag": tag, "count": c.n[tag]})
		return
	}
	if !q.Has("prefix") {
		http.Error(w, "tag or prefix is required", http.StatusBadRequest)
		return
	}
	prefix := q.Get("prefix")
	counts := map[string]int64{}
	for t, n := range c.n {
		if strings.HasPrefix(t, prefix) {
			counts[t] = n
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"counts": counts})
}
