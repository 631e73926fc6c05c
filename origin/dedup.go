package origin

import (
	"sync"
	"time"
)

// dedup remembers which jobs' continuations have run (or are running), so a
// redelivered or re-published result runs its continuation at most once. It
// forgets a job after the window, or the oldest jobs beyond max entries.
// It is safe for concurrent use.
type dedup struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	state  map[string]bool // job id → done (false: running)
	order  []dedupEntry    // FIFO of finished jobs, for eviction
	head   int
}

type dedupEntry struct {
	id  string
	exp time.Time
}

func newDedup(window time.Duration, max int) *dedup {
	return &dedup{window: window, max: max, state: make(map[string]bool)}
}

// begin reports whether the caller should run the continuation for id; it
// marks id as running. False means it ran or is running already.
func (d *dedup) begin(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, seen := d.state[id]; seen {
		return false
	}
	d.state[id] = false
	return true
}

// finish marks id as done.
func (d *dedup) finish(id string) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state[id] = true
	d.order = append(d.order, dedupEntry{id: id, exp: now.Add(d.window)})
	for d.head < len(d.order) {
		e := d.order[d.head]
		if len(d.order)-d.head <= d.max && now.Before(e.exp) {
			break
		}
		delete(d.state, e.id)
		d.order[d.head] = dedupEntry{}
		d.head++
	}
	if d.head > 1024 && d.head*2 > len(d.order) {
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
}

// abort forgets a running id so a later delivery can run it again.
func (d *dedup) abort(id string) {
	d.mu.Lock()
	delete(d.state, id)
	d.mu.Unlock()
}
