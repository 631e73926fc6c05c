package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestFetch(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if h := c.Hello(); h.Origin == "" || h.Version == "" {
		t.Errorf("hello: got %+v", h)
	}
	res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=1", Key: "fetch-1"})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if res.Status != 200 || string(res.Body) != "delayed 1 ms\n" || res.Key != "fetch-1" || res.Job == "" ||
		res.Executor == "" || res.Attempt != 1 || res.Duplicate || res.Headers["content-type"] == "" {
		t.Errorf("got %+v", res)
	}
	if res.Timing.TotalMS <= 0 || res.Timing.FetchMS <= 0 {
		t.Errorf("timing: got %+v", res.Timing)
	}

	// A body that is not UTF-8 comes back as sent (base64 on the wire).
	res, err = c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/bytes?n=300&binary=1"})
	if err != nil {
		t.Fatalf("binary Fetch: %v", err)
	}
	want := make([]byte, 300)
	for i := range want {
		want[i] = byte(i*7 + 0x80)
	}
	if !bytes.Equal(res.Body, want) || !strings.HasPrefix(res.Key, "k-") {
		t.Errorf("binary body: got %d bytes %x..., key %q", len(res.Body), res.Body[:min(8, len(res.Body))], res.Key)
	}

	// A POST body reaches the target; an HTTP error status is a result.
	res, err = c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/echo", Method: "POST", Body: []byte("hé\x00"),
		Headers: map[string]string{"x-test": "1"}})
	if err != nil || !strings.Contains(string(res.Body), `"body":"hé\u0000"`) || !strings.Contains(string(res.Body), `"X-Test":"1"`) {
		t.Errorf("echo: got %v %s", err, res.Body)
	}
	if res, err = c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/status?code=503"}); err != nil || res.Status != 503 {
		t.Errorf("status 503: got %+v %v", res, err)
	}
}

func TestFetchErrors(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tests := []struct {
		name string
		req  client.Request
		want client.Code
	}{
		{"scheme", client.Request{URL: "ftp://127.0.0.1/x"}, client.CodeInvalidURL},
		{"no host", client.Request{URL: "http:///x"}, client.CodeInvalidURL},
		{"blocked", client.Request{URL: "http://10.255.255.1/"}, client.CodeBlockedDestination},
		{"metadata", client.Request{URL: "http://169.254.169.254/latest/meta-data/"}, client.CodeBlockedDestination},
		{"bad method", client.Request{URL: st.TargetURL() + "/echo", Method: "G T"}, client.CodeBadRequest},
		{"no url (client side)", client.Request{}, client.CodeBadRequest},
		{"bad key (client side)", client.Request{URL: st.TargetURL(), Key: "é"}, client.CodeBadRequest},
		{"bad delay (client side)", client.Request{URL: st.TargetURL(), Delay: -time.Second}, client.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Fetch(ctx, tc.req)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %+v, %v; want *client.Error %s", res, err, tc.want)
			}
			if e.Code != tc.want {
				t.Errorf("got code %s (%s), want %s", e.Code, e.Message, tc.want)
			}
		})
	}
}

// TestCodes holds the client's codes to the broker's: every code the
// server can send has a client constant.
func TestCodes(t *testing.T) {
	known := map[client.Code]bool{}
	for _, c := range []client.Code{client.CodeBadRequest, client.CodeInvalidURL, client.CodeBlockedDestination,
		client.CodeTooLarge, client.CodeQueueFull, client.CodeTimeout, client.CodeFetchFailed, client.CodeUnauthorized,
		client.CodeInternal, client.CodeDeadLetter, client.CodeNotFound, client.CodeResultExpired, client.CodeCanceled,
		client.CodeAlreadyFinished, client.CodeCircuitOpen} {
		known[c] = true
	}
	for _, c := range broker.Codes() {
		if !known[client.Code(c)] {
			t.Errorf("broker code %q has no client constant", c)
		}
	}
}

func TestFetchConcurrent(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS(), client.WithMaxInFlight(64))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers, each = 50, 20
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := c.Fetch(ctx, client.Request{URL: fmt.Sprintf("%s/bytes?n=%d", st.TargetURL(), w*each+i)})
				if err == nil && len(res.Body) != w*each+i {
					err = fmt.Errorf("fetch %d.%d: got %d bytes", w, i, len(res.Body))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseUnblocksWaiters(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=2000"})
	if err != nil {
		t.Fatal(err)
	}
	waitEnqueued(t, p)
	errc := make(chan error, 1)
	go func() { _, err := p.Result(); errc <- err }()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, client.ErrClosed) {
			t.Errorf("waiter: got %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not unblock the waiter")
	}
	if _, err := c.Fetch(ctx, client.Request{URL: st.TargetURL()}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Fetch after Close: got %v, want ErrClosed", err)
	}
	if err := c.Cancel(ctx, client.Key("x")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Cancel after Close: got %v, want ErrClosed", err)
	}
	_ = c.Close() // twice is fine
	testutil.Eventually(t, 5*time.Second, func() bool { return len(clientGoroutines()) == 0 },
		"client goroutines left after Close: %v", clientGoroutines())
}

func TestFetchContext(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS(), client.WithMaxInFlight(1))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=3000"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	// The abandoned fetch freed its slot (the cap is 1).
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if _, err := c.Fetch(ctx2, client.Request{URL: st.TargetURL() + "/delay?ms=1"}); err != nil {
		t.Fatalf("after an abandoned fetch: %v", err)
	}
	// With the one slot taken, Go blocks until its context ends.
	p, err := c.Go(ctx2, client.Request{URL: st.TargetURL() + "/delay?ms=3000"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abandon()
	ctx3, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	if _, err := c.Go(ctx3, client.Request{URL: st.TargetURL()}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Go over the in-flight cap: got %v, want context.DeadlineExceeded", err)
	}
}

func TestCall(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, via := range []string{client.ViaDirect, client.ViaNATS, client.ViaHTTP} {
		got, err := c.Call(ctx, "echo", []byte("hello "+via), via)
		if err != nil || string(got) != "hello "+via {
			t.Errorf("echo via %s: got %q %v", via, got, err)
		}
	}
	got, err := c.Call(ctx, "transform", []byte(`{"data":"ǆé"}`), client.ViaDirect)
	if err != nil || string(got) != `{"data":"ǄÉ","length":4}` {
		t.Errorf("transform: got %s %v", got, err)
	}
	_, err = c.Call(ctx, "nope", nil, client.ViaDirect)
	var ce *client.CallError
	if !errors.As(err, &ce) || ce.Status != 404 || ce.Message == "" {
		t.Errorf("unknown function: got %v, want a 404 *CallError", err)
	}
	_, err = c.Call(ctx, "transform", []byte(`not json`), client.ViaNATS)
	if !errors.As(err, &ce) || ce.Status != 400 {
		t.Errorf("bad input: got %v, want a 400 *CallError", err)
	}
}

func TestDialAuth(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.AuthToken = "s3cret" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, st.OriginWS()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without token: got %v, want an HTTP 401 error", err)
	}
	if _, err := client.Dial(ctx, st.OriginWS(), client.WithToken("wrong")); err == nil {
		t.Error("wrong token: want an error")
	}
	c := dial(t, st.OriginWS(), client.WithToken("s3cret"))
	if res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay"}); err != nil || res.Status != 200 {
		t.Errorf("fetch with token: %+v %v", res, err)
	}
	if got, err := c.Call(ctx, "echo", []byte("x"), client.ViaDirect); err != nil || string(got) != "x" {
		t.Errorf("call with token: %q %v", got, err)
	}
}

func TestDialErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		url  string
		opts []client.Option
	}{
		{"http://127.0.0.1:1/ws", nil},
		{"ws://127.0.0.1:1/ws", nil},
		{"ws://127.0.0.1:1/ws", []client.Option{client.WithMaxInFlight(0)}},
		{"ws://127.0.0.1:1/ws", []client.Option{client.WithReconnectBackoff(time.Second, time.Millisecond)}},
	} {
		if c, err := client.Dial(ctx, tc.url, tc.opts...); err == nil {
			c.Close()
			t.Errorf("Dial(%s): want an error", tc.url)
		}
	}
}

// TestDelay: a delayed job is not fetched before its delay has passed, and
// its timing says so (PROTOCOL.md §1.1).
func TestDelay(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const delay = 300 * time.Millisecond
	key := fmt.Sprintf("delay-%d", time.Now().UnixNano())
	start := time.Now()
	res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/count?tag=" + key, Key: key, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("a job delayed %s finished after %s", delay, took)
	}
	if res.Status != 200 || res.Timing.DelayMS < float64(delay.Milliseconds()) {
		t.Errorf("got status %d, timing %+v; want 200 and delay_ms >= %d", res.Status, res.Timing, delay.Milliseconds())
	}
	if n := seen(t, st.TargetURL(), key)[key]; n != 1 {
		t.Errorf("target saw the delayed fetch %d times, want 1", n)
	}
}

// TestQueueFull: fetches beyond the origin's per-connection in-flight cap
// are refused with a typed queue_full error, not retried.
func TestQueueFull(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.MaxInFlight = 2 })
	c := dial(t, st.OriginWS(), client.WithMaxInFlight(10))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ps []*client.Pending
	for range 5 {
		// Slow enough that the first two are still in flight when the
		// last arrives, also on a busy machine.
		p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=2000"})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	var ok, full int
	for _, p := range ps {
		_, err := p.Wait(ctx)
		var e *client.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &e) && e.Code == client.CodeQueueFull:
			full++
		default:
			t.Errorf("got %v, want a result or queue_full", err)
		}
	}
	if ok != 2 || full != 3 {
		t.Errorf("got %d results and %d queue_full, want 2 and 3", ok, full)
	}
}
