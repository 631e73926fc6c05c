package executor

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// loadProcess keeps the process's scheduler busy until the returned stop
// is called: spinners (more than GOMAXPROCS of them, so that runnable
// goroutines wait for a CPU) and sleepers that wake every 200 µs, whose
// wake-ups give the scheduling-latency metric its samples (with no
// spinners, they wake to an idle CPU).
func loadProcess(spinners int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range spinners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; ; x++ {
				if x%1024 == 0 {
					select {
					case <-done:
						return
					default:
					}
				}
			}
		}()
	}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(200 * time.Microsecond):
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

// tickUntil calls p.tick every pacerWindow until cond holds or limit
// passes; before each tick it runs each (marking small work, a waiter).
func tickUntil(p *pacer, limit time.Duration, each func(), cond func() bool) bool {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		each()
		time.Sleep(pacerWindow)
		p.tick(time.Now())
		if cond() {
			return true
		}
	}
	return false
}

// TestPacerSlowsBulkWhileSmallWorkWaitsForCPU loads the process so that
// runnable goroutines wait for a CPU: with small results being stored the
// pacer limits the bulk lane (never below its floor), without them it
// leaves it unpaced, and once the load is gone it raises the rate again.
func TestPacerSlowsBulkWhileSmallWorkWaitsForCPU(t *testing.T) {
	p := newPacer(DefaultBulkLatencyTarget, nil)
	stop := loadProcess(4 * runtime.GOMAXPROCS(0))
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	// No small work: large results alone are not paced, however busy.
	if tickUntil(p, 2*time.Second, func() { p.stored.Add(1 << 20) }, func() bool { return p.lim.Limit() != rate.Inf }) {
		t.Fatalf("paced to %v B/s with no small result stored", p.lim.Limit())
	}
	// Small work and a busy scheduler: paced.
	small := func() { p.smallStored(); p.stored.Add(1 << 20); p.waited.Store(true) }
	if !tickUntil(p, 20*time.Second, small, func() bool { return p.lim.Limit() != rate.Inf }) {
		t.Fatal("not paced while goroutines waited for a CPU and small results were stored")
	}
	paced := p.lim.Limit()
	if paced < pacerFloor {
		t.Fatalf("paced to %v B/s, below the floor %d", paced, pacerFloor)
	}
	stop()
	stop = nil
	// Load gone, small work and waiting bulk results still there: the rate
	// goes up again (its samples come from the sleepers).
	unload := loadProcess(0)
	defer unload()
	if !tickUntil(p, 20*time.Second, small, func() bool { return p.lim.Limit() > 2*paced }) {
		t.Fatalf("rate %v B/s did not rise above twice %v B/s once the load was gone", p.lim.Limit(), paced)
	}
}

// TestPacerWait checks the waits: none while unpaced; a result waits for
// its bytes at the current rate, lets nothing through if its context ends,
// and goes at once when the rate is raised while it waits.
func TestPacerWait(t *testing.T) {
	p := newPacer(DefaultBulkLatencyTarget, nil)
	if err := p.wait(context.Background(), 3<<20); err != nil || p.stored.Load() != 3<<20 {
		t.Fatalf("unpaced wait: %v, stored %d", err, p.stored.Load())
	}
	p.lim.SetLimit(pacerFloor)
	_ = p.lim.AllowN(time.Now(), pacerBurst) // the burst is spent
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.wait(ctx, 1<<20); !errors.Is(err, context.DeadlineExceeded) || p.stored.Load() != 3<<20 {
		t.Fatalf("wait past its context: %v, stored %d", err, p.stored.Load())
	}
	if !p.waited.Load() {
		t.Fatal("a result waited but the window does not say so")
	}
	// At 1 MiB/s a 4 MiB result waits about 4 s; raised to unpaced, it
	// goes within a window.
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- p.wait(context.Background(), 4<<20) }()
	time.Sleep(2 * pacerWindow)
	p.lim.SetLimit(rate.Inf)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited > 3*time.Second {
		t.Errorf("waited %v after the rate was raised to unlimited at %v", waited, 2*pacerWindow)
	}
	if p.stored.Load() != 7<<20 {
		t.Errorf("stored %d bytes, want %d", p.stored.Load(), 7<<20)
	}
	var nilPacer *pacer
	if err := nilPacer.wait(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
	nilPacer.smallStored()
}
