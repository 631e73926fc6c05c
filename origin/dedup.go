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
	state  map[string]dedupState // by job id
	order  []dedupEntry          // FIFO of finished jobs, for eviction
	head   int
}

// dedupState is one job's entry: the ReceivedAt of the job generation seen
// (a key reused after the key window makes a new job under the same id,
// broker.KeyJobID) and whether its continuation finished.
type dedupState struct {
	gen  int64
	done bool
}

type dedupEntry struct {
	id  string
	exp time.Time
}

func newDedup(window time.Duration, max int) *dedup {
	return &dedup{window: window, max: max, state: make(map[string]dedupState)}
}

// begin reports whether the caller should run the continuation for job id
// of generation gen (its ReceivedAt); it marks it as running. False means it
// ran or is running already. A finished entry of another generation (an
// older job under the same key-derived id) is replaced; generation 0 (not
// known) matches any.
func (d *dedup) begin(id string, gen int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, seen := d.state[id]; seen && (st.gen == gen || st.gen == 0 || gen == 0 || !st.done) {
		return false
	}
	d.state[id] = dedupState{gen: gen}
	return true
}

// finish marks id as done.
func (d *dedup) finish(id string) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state[id]
	st.done = true
	d.state[id] = st
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

// done reports whether the continuation of job id finished within the
// window (this process ran it). With no stored result left, the job is known
// to have finished while its result is gone: result_expired.
func (d *dedup) done(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state[id].done
}
