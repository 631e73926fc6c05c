package stack

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

// TestReadingClientIsNeverDroppedByItsOwnReplies floods start-fetch frames
// at an origin whose send queue holds only 8 frames, from a client that
// reads all the while. Read-side backpressure must pause reading instead of
// overflowing the queue: the client is not dropped, and every frame gets
// exactly one reply (enqueued, then one final frame).
func TestReadingClientIsNeverDroppedByItsOwnReplies(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.SendQueue = 8 })
	conn, _, err := websocket.DefaultDialer.Dial(st.OriginWS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 400
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			frame := `{"type":"start-fetch","id":"f` + itoa(i) + `","url":"` + st.TargetURL() + `/delay?ms=0"}`
			if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	enqueued, final := map[string]int{}, map[string]int{}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for len(final) < n {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d final frames: %v (the reading client was dropped)", len(final), err)
		}
		var f testutil.Frame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		switch f.Type {
		case "hello":
		case "enqueued":
			enqueued[f.ID]++
		case "result", "error":
			final[f.ID]++
			if f.Type == "error" && f.Code != "queue_full" {
				t.Fatalf("unexpected error frame %+v", f)
			}
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	for id, k := range final {
		if k != 1 || enqueued[id] > 1 {
			t.Fatalf("%s: %d final frames and %d enqueued, want exactly one final frame", id, k, enqueued[id])
		}
	}
}

// TestClientThatStopsReadingIsClosedAndItsResultsKept: a client that reads
// its enqueued frames, then never reads again while large results arrive,
// fills its byte-bounded send queue and is closed; its results stay
// available with get-result, and a bystander is not slowed down.
func TestClientThatStopsReadingIsClosedAndItsResultsKept(t *testing.T) {
	release := make(chan struct{})
	body := strings.Repeat("a", 200_000)
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	defer big.Close()
	var once sync.Once
	defer once.Do(func() { close(release) })
	st := startStack(t, func(c *config.Config) {
		c.Origin.SendQueueBytes = 1 << 20
		c.Origin.WriteTimeout = time.Second
		c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, strings.TrimPrefix(big.URL, "http://"))
	})
	slow := testutil.DialWSSmallBuffer(t, st.OriginWS())
	const n = 60
	for i := 0; i < n; i++ {
		slow.SendJSON(map[string]any{"type": "start-fetch", "id": "s" + itoa(i), "url": big.URL + "/"})
	}
	jobs := make([]string, 0, n)
	for len(jobs) < n {
		f := slow.Read()
		if f.Type != "enqueued" {
			t.Fatalf("got %+v, want enqueued", f)
		}
		jobs = append(jobs, f.Job)
	}
	once.Do(func() { close(release) }) // ~16 MB of result frames, never read

	// The bystander's fetches all complete. (Loose on purpose: on a loaded
	// machine its first result may queue behind the large ones in the
	// origin's results consumer; the tight figures are measured with
	// loadgen, not asserted here.)
	fast := testutil.DialWS(t, st.OriginWS())
	start := time.Now()
	for i := 0; i < 10; i++ {
		if _, res := fast.Fetch("x"+itoa(i), st.TargetURL()+"/delay?ms=0", nil); res.Type != "result" {
			t.Fatalf("bystander got %+v", res)
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the bystander's 10 fetches took %v", d)
	}

	// The slow client is closed: its queue (1 MiB) cannot hold its results.
	testutil.Eventually(t, 30*time.Second, func() bool {
		v, _ := testutil.MetricValue(t, st.Metrics().Gatherer(), origin.MetricSlowClientsTotal, nil)
		return v >= 1
	})
	_ = slow.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		if _, _, err := slow.Conn.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			// 1008 when the close frame gets through; 1006 when the
			// client's receive buffer was still full of unread frames.
			if errors.As(err, &ce) && ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("slow client closed with %d, want 1008 (or 1006, a cut connection)", ce.Code)
			}
			break
		}
	}

	// Every result is still there for a client that comes back.
	back := testutil.DialWS(t, st.OriginWS())
	for i, job := range jobs {
		back.SendJSON(map[string]any{"type": "get-result", "id": "g" + itoa(i), "job": job})
		f := back.Read()
		if f.Type != "result" || f.Job != job || f.Status != 200 {
			t.Fatalf("get-result %s: got %+v, want its result", job, f)
		}
	}
}

// TestMaxConnectionsRefusesWith503: beyond origin.max_connections an upgrade
// is refused with HTTP 503 before any WebSocket work, and counted; a freed
// slot is usable again.
func TestMaxConnectionsRefusesWith503(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.MaxConnections = 2 })
	a := testutil.DialWS(t, st.OriginWS())
	testutil.DialWS(t, st.OriginWS())
	_, resp, err := websocket.DefaultDialer.Dial(st.OriginWS(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("third connection: err %v, status %d; want HTTP 503", err, status)
	}
	testutil.WantMetric(t, st.Metrics().Gatherer(), origin.MetricWSRefusedTotal, map[string]string{origin.LabelReason: origin.RefusedMaxConnections}, 1)
	a.Conn.Close()
	testutil.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, _, err := websocket.DefaultDialer.DialContext(ctx, st.OriginWS(), nil)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}
