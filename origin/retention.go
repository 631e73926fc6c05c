package origin

import (
	"sync"
	"time"
)

// retention keeps the final frame of recently finished jobs so a client that
// reconnects can ask for it with get-result. It is bounded by age, entry
// count and bytes; the oldest entries go first. Safe for concurrent use.
type retention struct {
	mu       sync.Mutex
	ttl      time.Duration
	maxBytes int
	maxItems int
	bytes    int
	items    map[string]retained
	order    []string
}

type retained struct {
	result *finalResult
	exp    time.Time
}

// finalResult is what get-result replays: enough to render the final frame
// again for any client id.
type finalResult struct {
	frameFor func(clientID string) []byte
	size     int
}

func newRetention(ttl time.Duration, maxItems, maxBytes int) *retention {
	return &retention{ttl: ttl, maxItems: maxItems, maxBytes: maxBytes, items: make(map[string]retained)}
}

func (r *retention) put(jobID string, fr *finalResult) {
	if r.ttl <= 0 || fr.size > r.maxBytes {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.items[jobID]; ok {
		r.bytes -= old.result.size
	} else {
		r.order = append(r.order, jobID)
	}
	r.items[jobID] = retained{result: fr, exp: now.Add(r.ttl)}
	r.bytes += fr.size
	for len(r.order) > 0 {
		id := r.order[0]
		it, ok := r.items[id]
		if ok && len(r.items) <= r.maxItems && r.bytes <= r.maxBytes && now.Before(it.exp) {
			break
		}
		if ok {
			r.bytes -= it.result.size
			delete(r.items, id)
		}
		r.order[0] = ""
		r.order = r.order[1:]
	}
}

func (r *retention) get(jobID string) (*finalResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	it, ok := r.items[jobID]
	if !ok || time.Now().After(it.exp) {
		return nil, false
	}
	return it.result, true
}
