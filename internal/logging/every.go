package logging

import (
	"sync/atomic"
	"time"
)

// Every lets one log line through per interval for an event a client can
// cause at any rate (a refused request, say), and counts the events in
// between, so a flood costs one line per interval instead of one per event.
// The zero value allows a line every 10 seconds. Safe for concurrent use.
type Every struct {
	// Interval between lines; 0 means 10 s. Set it before first use.
	Interval time.Duration

	at atomic.Int64 // when the last line was allowed (UnixNano)
	n  atomic.Int64 // events since
}

// Tick counts one event. It reports whether a line may be logged now, and
// how many events happened since the last line, this one included.
func (e *Every) Tick() (events int64, ok bool) {
	n := e.n.Add(1)
	every := e.Interval
	if every <= 0 {
		every = 10 * time.Second
	}
	now, last := time.Now().UnixNano(), e.at.Load()
	if now-last <= int64(every) || !e.at.CompareAndSwap(last, now) {
		return n, false
	}
	e.n.Add(-n)
	return n, true
}
