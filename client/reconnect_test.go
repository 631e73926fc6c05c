package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/client"
)

// TestIdleTimeout: a connection whose peer goes silent without closing it
// is dropped after the idle timeout, and a fetch sent into it is sent again
// on the next connection.
func TestIdleTimeout(t *testing.T) {
	st := startStack(t, nil)
	u, _ := url.Parse(st.OriginWS())
	px := newCutProxy(t, u.Host, time.Second, 2*time.Second)
	c := dial(t, "ws://"+px.addr()+"/ws", client.WithIdleTimeout(time.Second),
		client.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay"}); err != nil {
		t.Fatal(err)
	}
	px.freeze()
	res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=1"})
	if err != nil || res.Status != 200 {
		t.Fatalf("fetch across a silent connection: %+v %v", res, err)
	}
}

// TestReconnectTimeout: when the origin stays unreachable past the
// reconnect timeout, open fetches and new calls fail with ErrDisconnected.
func TestReconnectTimeout(t *testing.T) {
	st := startStack(t, nil)
	u, _ := url.Parse(st.OriginWS())
	px := newCutProxy(t, u.Host, time.Second, 2*time.Second)
	c := dial(t, "ws://"+px.addr()+"/ws", client.WithReconnectTimeout(300*time.Millisecond),
		client.WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/delay?ms=2000"})
	if err != nil {
		t.Fatal(err)
	}
	px.stopListening()
	px.close() // cuts the open connection; nothing answers any more
	if _, err := p.Wait(ctx); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("open fetch: got %v, want ErrDisconnected", err)
	}
	if _, err := c.Go(ctx, client.Request{URL: st.TargetURL()}); !errors.Is(err, client.ErrDisconnected) {
		t.Errorf("new fetch: got %v, want ErrDisconnected", err)
	}
	if err := c.Cancel(ctx, client.Key("k")); !errors.Is(err, client.ErrDisconnected) {
		t.Errorf("cancel: got %v, want ErrDisconnected", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDelayAcrossDrop: a delayed job the origin confirmed is collected by
// key after the connection drops while it waits, and runs once.
func TestDelayAcrossDrop(t *testing.T) {
	st := startStack(t, nil)
	u, _ := url.Parse(st.OriginWS())
	px := newCutProxy(t, u.Host, time.Second, 2*time.Second)
	c := dial(t, "ws://"+px.addr()+"/ws", client.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := fmt.Sprintf("delay-drop-%d", time.Now().UnixNano())
	p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/count?tag=" + key, Key: key, Delay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitEnqueued(t, p)
	px.cutNow()
	res, err := p.Wait(ctx)
	if err != nil || res.Status != 200 || res.Key != key {
		t.Fatalf("got %+v %v", res, err)
	}
	if n := seen(t, st.TargetURL(), key)[key]; n != 1 {
		t.Errorf("target saw the fetch %d times, want 1", n)
	}
}

// TestAttach: a second client follows a job the first started under a key
// and then left (closed), and an unknown key is not_found.
func TestAttach(t *testing.T) {
	st := startStack(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := fmt.Sprintf("attach-%d", time.Now().UnixNano())
	first := dial(t, st.OriginWS())
	p, err := first.Go(ctx, client.Request{URL: st.TargetURL() + "/count?ms=300&tag=" + key, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	waitEnqueued(t, p)
	first.Close() // the job goes on at the origin

	second := dial(t, st.OriginWS())
	a, err := second.Attach(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Wait(ctx)
	if err != nil || res.Status != 200 || res.Key != key || string(res.Body) != "delayed 300 ms\n" {
		t.Fatalf("attached: got %+v %v", res, err)
	}
	if a.Job() != p.Job() || res.Job != p.Job() {
		t.Errorf("attached to job %q (result %q), started %q", a.Job(), res.Job, p.Job())
	}
	if n := seen(t, st.TargetURL(), key)[key]; n != 1 {
		t.Errorf("target saw the job %d times, want 1", n)
	}
	u, err := second.Attach(ctx, key+"-unknown")
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.Wait(ctx)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != client.CodeNotFound {
		t.Errorf("unknown key: got %v, want not_found", err)
	}
}
