package client_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestConnectionDrops runs many fetches through a TCP proxy that cuts every
// connection every 100–300 ms, and checks that each fetch gets exactly one
// result, none fails, and the target saw each fetch exactly once (the
// origin de-duplicates re-sent start-fetch frames by key). Every tenth
// fetch is delayed 20 ms, so scheduled jobs are re-attached too. PIPELINE_DROPS=1 runs 10,000 fetches and prints
// figures; by default it runs 500. PIPELINE_DROPS_INFLIGHT=N sets the
// fetches in flight (default 100).
func TestConnectionDrops(t *testing.T) {
	n, inFlight := 500, 100
	full := os.Getenv("PIPELINE_DROPS") == "1"
	if full {
		n = 10_000
	}
	if testing.Short() {
		n = 200
	}
	if v, err := strconv.Atoi(os.Getenv("PIPELINE_DROPS_INFLIGHT")); err == nil && v > 0 {
		inFlight = v
	}
	st := startStack(t, nil)
	u, err := url.Parse(st.OriginWS())
	if err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, u.Host, 100*time.Millisecond, 300*time.Millisecond)
	c := dial(t, "ws://"+px.addr()+"/ws", client.WithMaxInFlight(inFlight),
		client.WithReconnectBackoff(5*time.Millisecond, 200*time.Millisecond))

	run := fmt.Sprintf("drops-%d-", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := px.cut()
	start := time.Now()
	var (
		wg      sync.WaitGroup
		results atomic.Int64
		mu      sync.Mutex
		errs    = map[string]int{}
		got     = make([]int32, n)
	)
	sem := make(chan struct{}, inFlight)
	for i := range n {
		sem <- struct{}{}
		key := fmt.Sprintf("%s%d", run, i)
		req := client.Request{URL: st.TargetURL() + "/count?ms=5&tag=" + key, Key: key}
		if i%10 == 0 {
			req.Delay = 20 * time.Millisecond
		}
		p, err := c.Go(ctx, req)
		if err != nil {
			t.Fatalf("Go %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := p.Wait(ctx)
			atomic.AddInt32(&got[i], 1)
			if err == nil && (res.Status != 200 || res.Key != key) {
				err = fmt.Errorf("status %d key %q", res.Status, res.Key)
			}
			if err != nil {
				mu.Lock()
				errs[err.Error()]++
				mu.Unlock()
				return
			}
			results.Add(1)
		}()
	}
	wg.Wait()
	stop()
	elapsed := time.Since(start)
	for i, g := range got {
		if g != 1 {
			t.Errorf("fetch %d completed %d times", i, g)
		}
	}
	for msg, k := range errs {
		t.Errorf("%d fetches failed: %s", k, msg)
	}
	if results.Load() != int64(n) {
		t.Errorf("got %d results, want %d", results.Load(), n)
	}
	counts := seen(t, st.TargetURL(), run)
	var missing, twice int
	for i := range n {
		switch counts[fmt.Sprintf("%s%d", run, i)] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	if missing > 0 {
		t.Errorf("target: %d fetches never arrived", missing)
	}
	if twice > 0 {
		t.Errorf("target: %d fetches arrived more than once", twice)
	}
	msg := fmt.Sprintf("%d fetches, %d in flight, %d cuts in %.1fs (%.0f fetches/s): %d results, %d errors; target: %d missing, %d more than once",
		n, inFlight, px.cutCount(), elapsed.Seconds(), float64(n)/elapsed.Seconds(), results.Load(), len(errs), missing, twice)
	if full {
		fmt.Println(msg)
	}
	t.Log(msg)
	if px.cutCount() == 0 {
		t.Error("the proxy never cut a connection: the test proved nothing")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return len(clientGoroutines()) == 0 },
		"client goroutines left after Close: %v", clientGoroutines())
}
