package executor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// fakeClock is a settable time source, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Two limiters on one KV bucket (two processes) lease disjoint slots of a
// host's schedule; unused slots expire instead of piling up; a pause moves
// the shared schedule for both.
func TestRateLeasesShareOneSchedule(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := testutil.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := broker.EnsureRates(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	mk := func() *rateLimiter {
		l := newRateLimiter(kv, zerolog.Nop(), nil)
		l.now = clk.now
		t.Cleanup(l.close)
		return l
	}
	a, b := mk(), mk()
	d := Destination{Host: "h", Rate: 100, Burst: 1} // slots 10 ms apart, 10 per lease
	// take queues (nothing leased yet); the pump leases and answers.
	slot := func(l *rateLimiter) time.Time {
		t.Helper()
		got := make(chan time.Time, 1)
		if at, ok := l.take("h:80", d, func(at time.Time) { got <- at }); ok {
			return at
		}
		select {
		case at := <-got:
			return at
		case <-time.After(5 * time.Second):
			t.Fatal("no slot")
		}
		return time.Time{}
	}
	t0 := clk.now()
	if at := slot(a); !at.Equal(t0) {
		t.Fatalf("first slot %v, want now", at.Sub(t0))
	}
	for i := 1; i < 10; i++ { // the rest of a's batch, without the KV
		at, ok := a.tryTake("h:80", d)
		if !ok || at.Sub(t0) != time.Duration(i)*10*time.Millisecond {
			t.Fatalf("slot %d: %v %v", i, at.Sub(t0), ok)
		}
	}
	if at := slot(b); at.Sub(t0) != 100*time.Millisecond {
		t.Fatalf("b's first slot at %v, want 100ms (after a's batch)", at.Sub(t0))
	}
	// b holds 9 more slots (110..190 ms); a second later they are stale.
	clk.add(time.Second)
	if at, ok := b.tryTake("h:80", d); ok {
		t.Fatalf("stale slot %v handed out", at.Sub(t0))
	}
	// A Retry-After pause at a moves b's next lease past it.
	until := clk.now().Add(5 * time.Second)
	a.pause("h:80", d, until)
	clk.add(4500 * time.Millisecond) // within the lease horizon of until
	if at := slot(b); at.Before(until) {
		t.Fatalf("b's slot %v before the pause's end", until.Sub(at))
	}
}
