package stack

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// Through origin, JetStream and executor: fetches to a host that hangs do
// not delay another client's fetches to a healthy host, and once the host
// answers every hanging fetch gets exactly one final frame, none of them a
// dead letter although they waited far longer than AckWait × MaxDeliver.
func TestHangingHostDoesNotStallOtherClient(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			_, _ = w.Write([]byte("late"))
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { open(); hang.Close() })
	st := startStack(t, func(c *config.Config) {
		c.Executor.Count = 1
		c.Executor.Concurrency = 8
		c.Executor.PerHostConcurrency = 2
		c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, strings.TrimPrefix(hang.URL, "http://"))
		c.Streams.AckWait = time.Second
		c.Streams.MaxDeliver = 2
	})
	a := testutil.DialWS(t, st.OriginWS())
	const hanging = 30
	for i := range hanging {
		a.SendJSON(map[string]any{"type": "start-fetch", "id": "a" + string(rune('A'+i)), "url": hang.URL + "/", "timeout_ms": 60000})
		if f := a.Read(); f.Type != "enqueued" {
			t.Fatalf("hanging fetch %d: got %+v, want enqueued", i, f)
		}
	}
	// 30 jobs for 8 slots: without the cap every slot would hang.
	b := testutil.DialWS(t, st.OriginWS())
	start := time.Now()
	for i := range 10 {
		_, f := b.Fetch("b"+string(rune('0'+i)), st.TargetURL()+"/delay?ms=1", nil)
		if f.Type != "result" || f.Status != http.StatusOK {
			t.Fatalf("healthy fetch %d: got %+v", i, f)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("10 fetches to a healthy host took %v next to a hanging host", d)
	}
	// Waiting 3 s is three AckWaits: still no redelivery, no dead letter.
	time.Sleep(3 * time.Second)
	open()
	seen := map[string]int{}
	for range hanging {
		f := a.Read()
		if f.Type != "result" || f.Status != http.StatusOK {
			t.Fatalf("hanging fetch %s: got %+v, want its result", f.ID, f)
		}
		seen[f.ID]++
	}
	if len(seen) != hanging {
		t.Fatalf("got final frames for %d distinct fetches, want %d: %v", len(seen), hanging, seen)
	}
	_ = a.Conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, data, err := a.Conn.ReadMessage(); err == nil {
		t.Errorf("a second final testutil.Frame arrived: %s", data)
	}
}

// Through two origins sharing one executor: origin o2's fetches finish
// while most of origin o1's deep backlog still waits, instead of queueing
// behind all of it.
func TestDeepBacklogDoesNotStarveSecondOrigin(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.Executor.Count = 1
		c.Executor.Concurrency = 8
	})
	// A second origin process's worth: origin o2 only, on the same NATS.
	cfg := EphemeralConfig()
	cfg.NATS.Embedded, cfg.NATS.URL = false, st.NATSURL()
	cfg.Executor.Count, cfg.Runtime.Enabled, cfg.Target.Enabled = 0, false, false
	cfg.Origin.ID = "o2"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o2, err := Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o2.Shutdown(context.Background()) }()

	const backlog = 1000 // 20 ms each on 8 slots: about 2.5 s of work
	a := testutil.DialWS(t, st.OriginWS())
	for i := range backlog {
		a.SendJSON(map[string]any{"type": "start-fetch", "id": fmt.Sprintf("o1-%d", i), "url": st.TargetURL() + "/delay?ms=20"})
	}
	var o1Done atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for o1Done.Load() < backlog {
			_ = a.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, data, err := a.Conn.ReadMessage()
			if err != nil {
				readerDone <- err
				return
			}
			if strings.Contains(string(data), `"type":"result"`) {
				o1Done.Add(1)
			}
		}
		readerDone <- nil
	}()
	deadline := time.Now().Add(30 * time.Second)
	for o1Done.Load() < 16 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b := testutil.DialWS(t, o2.OriginWS())
	for i := range 10 {
		_, f := b.Fetch(fmt.Sprintf("o2-%d", i), st.TargetURL()+"/delay?ms=20", nil)
		if f.Type != "result" || f.Status != http.StatusOK {
			t.Fatalf("o2 fetch %d: got %+v", i, f)
		}
	}
	t.Logf("o2 done after %d of o1's %d", o1Done.Load(), backlog)
	// Ten fetches one after another take ~10 turns; behind o1's line they
	// would come after all 1000. Loose: most of o1's backlog still left.
	if d := o1Done.Load(); d > backlog*3/4 {
		t.Errorf("o2's 10 fetches finished after %d of o1's %d; with turns between origins they finish long before", d, backlog)
	}
	if err := <-readerDone; err != nil {
		t.Fatalf("o1 got %d of %d results: %v", o1Done.Load(), backlog, err)
	}
}
