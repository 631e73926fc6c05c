package logging

import (
	"sync"
	"testing"
	"time"
)

func TestEveryLetsOneLineThroughPerInterval(t *testing.T) {
	var e Every
	if n, ok := e.Tick(); !ok || n != 1 {
		t.Fatalf("first event: got (%d, %v), want (1, true)", n, ok)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	lines := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				if _, ok := e.Tick(); ok {
					mu.Lock()
					lines++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if lines != 0 {
		t.Fatalf("%d lines within the interval, want none", lines)
	}
	// Past the interval the next event gets a line, with the held-back count.
	e.at.Store(time.Now().Add(-11 * time.Second).UnixNano())
	if n, ok := e.Tick(); !ok || n != 8001 {
		t.Fatalf("after the interval: got (%d, %v), want (8001, true)", n, ok)
	}
}
