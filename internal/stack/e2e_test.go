package stack

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

func TestHappyPathEndToEnd(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	enq, res := c.Fetch("c-1", st.TargetURL()+"/delay?ms=14", map[string]any{"headers": map[string]string{"accept": "text/plain"}})
	if res.Type != "result" || res.ID != "c-1" || res.Job != enq.Job {
		t.Fatalf("got %+v, want result for c-1 job %s", res, enq.Job)
	}
	if res.Status != 200 || res.Body != "delayed 14 ms\n" || res.BodyEncoding != "utf8" || res.Truncated {
		t.Errorf("got status %d body %q enc %s truncated %v", res.Status, res.Body, res.BodyEncoding, res.Truncated)
	}
	if res.Attempt != 1 || res.Executor == "" {
		t.Errorf("got attempt %d executor %q, want 1 and an id", res.Attempt, res.Executor)
	}
	if res.Headers["content-type"] != "text/plain; charset=utf-8" {
		t.Errorf("content-type = %q", res.Headers["content-type"])
	}
	tm := res.Timing
	if tm == nil || tm.FetchMS < 14 || tm.TotalMS < tm.FetchMS || tm.EnqueueMS <= 0 || tm.QueueMS < 0 || tm.TotalMS < tm.EnqueueMS {
		t.Errorf("timing %+v inconsistent", tm)
	}
}

func TestBinaryBodyIsBase64AndLongBodyTruncated(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Executor.Fetcher.MaxBodyBytes = 1000 })
	c := testutil.DialWS(t, st.OriginWS())
	_, res := c.Fetch("bin", st.TargetURL()+"/bytes?n=100&binary=1", nil)
	if res.Type != "result" || res.BodyEncoding != "base64" || res.Truncated {
		t.Fatalf("got %+v, want base64 result", res)
	}
	_, res = c.Fetch("long", st.TargetURL()+"/bytes?n=5000", nil)
	if res.Type != "result" || !res.Truncated || len(res.Body) != 1000 {
		t.Fatalf("got truncated=%v len=%d, want truncated 1000 bytes", res.Truncated, len(res.Body))
	}
}

func TestHTTPErrorStatusesAreResults(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	for _, code := range []int{404, 418, 500, 503} {
		_, res := c.Fetch("s", st.TargetURL()+"/status?code="+itoa(code), nil)
		if res.Type != "result" || res.Status != code {
			t.Errorf("status %d: got %+v, want a result with that status", code, res)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	closed := strconv.Itoa(testutil.FreePort(t))
	st := startStack(t, func(c *config.Config) {
		c.Origin.MaxFrameBytes = 4096
		c.Origin.HardFrameBytes = 64 << 10
		c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, "127.0.0.1:"+closed)
	})
	c := testutil.DialWS(t, st.OriginWS())
	tgt := st.TargetURL()
	cases := []struct {
		name   string
		send   func()
		wantID string
		code   string
	}{
		{"malformed json", func() { c.SendRaw(websocket.TextMessage, []byte(`{"type":"start-fetch",`)) }, "", "bad_request"},
		{"not an object", func() { c.SendRaw(websocket.TextMessage, []byte(`[1,2]`)) }, "", "bad_request"},
		{"unknown type", func() { c.SendJSON(map[string]any{"type": "launch", "id": "u1"}) }, "u1", "bad_request"},
		{"missing id", func() { c.SendJSON(map[string]any{"type": "start-fetch", "url": tgt + "/echo"}) }, "", "bad_request"},
		{"id too long", func() { c.SendJSON(map[string]any{"type": "start-fetch", "id": strings.Repeat("x", 129), "url": tgt}) }, "", "bad_request"},
		{"wrong field type keeps id", func() { c.SendRaw(websocket.TextMessage, []byte(`{"type":"start-fetch","id":"w1","url":5}`)) }, "w1", "bad_request"},
		{"bad method", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "m1", "url": tgt, "method": "GE T"})
		}, "m1", "bad_request"},
		{"negative timeout", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "t0", "url": tgt, "timeout_ms": -1})
		}, "t0", "bad_request"},
		{"binary frame", func() { c.SendRaw(websocket.BinaryMessage, []byte{1, 2, 3}) }, "", "bad_request"},
		{"missing url", func() { c.SendJSON(map[string]any{"type": "start-fetch", "id": "i0"}) }, "i0", "invalid_url"},
		{"ftp url", func() { c.SendJSON(map[string]any{"type": "start-fetch", "id": "i1", "url": "ftp://example.com/x"}) }, "i1", "invalid_url"},
		{"relative url", func() { c.SendJSON(map[string]any{"type": "start-fetch", "id": "i2", "url": "/just/a/path"}) }, "i2", "invalid_url"},
		{"garbage url", func() { c.SendJSON(map[string]any{"type": "start-fetch", "id": "i3", "url": "http://[::1"}) }, "i3", "invalid_url"},
		{"frame too large", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "big", "url": tgt, "body": strings.Repeat("a", 8000)})
		}, "", "too_large"},
		{"blocked destination", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "b1", "url": "http://169.254.169.254/latest/meta-data"})
		}, "b1", "blocked_destination"},
		{"loopback not allow-listed", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "b2", "url": "http://127.0.0.1:1/"})
		}, "b2", "blocked_destination"},
		{"timeout", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "slow", "url": tgt + "/delay?ms=3000", "timeout_ms": 200})
		}, "slow", "timeout"},
		{"closed port", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "cp", "url": "http://127.0.0.1:" + closed + "/"})
		}, "cp", "fetch_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.SetT(t)
			tc.send()
			f := c.Read()
			if f.Type == "enqueued" {
				if f.ID != tc.wantID {
					t.Fatalf("enqueued for %q, want %q", f.ID, tc.wantID)
				}
				f = c.Read()
			}
			if f.Type != "error" || f.Code != tc.code || f.ID != tc.wantID || f.Message == "" {
				t.Fatalf("got %+v, want error %s for id %q", f, tc.code, tc.wantID)
			}
		})
	}
	// The connection survived every bad frame.
	c.SetT(t)
	_, res := c.Fetch("after", tgt+"/delay?ms=0", nil)
	if res.Type != "result" || res.Status != 200 {
		t.Fatalf("after errors got %+v, want a result", res)
	}
}

func TestFrameOverHardCapClosesWith1009(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.Origin.MaxFrameBytes = 1024
		c.Origin.HardFrameBytes = 4096
	})
	c := testutil.DialWS(t, st.OriginWS())
	big := []byte(`{"type":"start-fetch","id":"x","body":"` + strings.Repeat("a", 10000) + `"}`)
	go func() { _ = c.Conn.WriteMessage(websocket.TextMessage, big) }() // the server may stop reading midway
	_ = c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var frames []testutil.Frame
	for {
		_, data, err := c.Conn.ReadMessage()
		if err == nil {
			var f testutil.Frame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("frame %q: %v", data, err)
			}
			frames = append(frames, f)
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("got %v, want close 1009", err)
		}
		break
	}
	// The error frame comes first, so the client knows why.
	if len(frames) != 1 || frames[0].Type != "error" || frames[0].Code != "too_large" {
		t.Fatalf("frames before the close: %+v, want one too_large error", frames)
	}
}

// TestInvalidUTF8ClosesWith1007: a text frame that is not UTF-8 gets a
// bad_request error frame, then close 1007 (RFC 6455 §8.1); nothing is
// fetched with an altered URL or body.
func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	st := startStack(t, nil)
	for name, data := range map[string]string{
		"garbage":           "\xff\xfe\xfd",
		"inside JSON value": `{"type":"start-fetch","id":"u","url":"` + st.TargetURL() + "/echo?q=\xff\"}",
	} {
		t.Run(name, func(t *testing.T) {
			c := testutil.DialWS(t, st.OriginWS())
			c.SendRaw(websocket.TextMessage, []byte(data))
			_ = c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var frames []testutil.Frame
			for {
				_, msg, err := c.Conn.ReadMessage()
				if err == nil {
					var f testutil.Frame
					if err := json.Unmarshal(msg, &f); err != nil {
						t.Fatalf("frame %q: %v", msg, err)
					}
					frames = append(frames, f)
					continue
				}
				if !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
					t.Fatalf("got %v, want close 1007", err)
				}
				break
			}
			if len(frames) != 1 || frames[0].Type != "error" || frames[0].Code != "bad_request" {
				t.Fatalf("frames before the close: %+v, want one bad_request error (no enqueued)", frames)
			}
		})
	}
}

func TestDuplicateInFlightIDRejected(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "d", "url": st.TargetURL() + "/delay?ms=300"})
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "d", "url": st.TargetURL() + "/delay?ms=0"})
	var got []string
	for len(got) < 3 {
		f := c.Read()
		got = append(got, f.Type+":"+f.Code)
	}
	want := map[string]bool{"enqueued:": true, "error:bad_request": true, "result:": true}
	for _, g := range got {
		if !want[g] {
			t.Fatalf("frames %v, want enqueued, error bad_request, result", got)
		}
		delete(want, g)
	}
}

func TestTwoOriginsGetOnlyTheirOwnResults(t *testing.T) {
	st := startStack(t, nil)
	cfg := EphemeralConfig()
	onlyOrigin(&cfg)
	cfg.NATS.URL = st.NATSURL()
	cfg.Origin.ID = "o2"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o2, err := Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o2.Shutdown(context.Background()) })

	const n = 50
	var wg sync.WaitGroup
	for _, s := range []*Stack{st, o2} {
		wg.Add(1)
		go func(s *Stack) {
			defer wg.Done()
			conn, _, err := websocket.DefaultDialer.Dial(s.OriginWS(), nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			var hello testutil.Frame
			_ = conn.ReadJSON(&hello)
			for i := 0; i < n; i++ {
				_ = conn.WriteJSON(map[string]any{"type": "start-fetch", "id": "r" + itoa(i), "url": st.TargetURL() + "/echo?origin=" + hello.Origin})
			}
			results := 0
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			for results < n {
				var f testutil.Frame
				if err := conn.ReadJSON(&f); err != nil {
					t.Errorf("origin %s: %v after %d results", hello.Origin, err, results)
					return
				}
				if f.Type == "result" {
					results++
					if !strings.Contains(f.Body, "origin="+hello.Origin) {
						t.Errorf("origin %s got a result for another origin: %s", hello.Origin, f.Body)
					}
				} else if f.Type != "enqueued" {
					t.Errorf("unexpected frame %+v", f)
				}
			}
		}(s)
	}
	wg.Wait()
	if a, b := st.Origin().Stats().Finished, o2.Origin().Stats().Finished; a != n || b != n {
		t.Fatalf("finished o1=%d o2=%d, want %d each", a, b, n)
	}
}

func TestSecondExecutorSharesLoad(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Executor.Count = 2; c.Executor.Concurrency = 8 })
	c := testutil.DialWS(t, st.OriginWS())
	const n = 80
	for i := 0; i < n; i++ {
		c.SendJSON(map[string]any{"type": "start-fetch", "id": "j" + itoa(i), "url": st.TargetURL() + "/delay?ms=20"})
	}
	byExec := map[string]int{}
	for results := 0; results < n; {
		f := c.Read()
		if f.Type == "result" {
			byExec[f.Executor]++
			results++
		}
	}
	if len(byExec) != 2 {
		t.Fatalf("results by executor %v, want both executors used", byExec)
	}
	for id, k := range byExec {
		if k < n/5 {
			t.Errorf("executor %s did %d of %d jobs, want a fair share", id, k, n)
		}
	}
}

func TestNamedContinuationRunsExactlyOnce(t *testing.T) {
	var mu sync.Mutex
	runs := map[string]int{}
	states := map[string]string{}
	done := make(chan string, 100)
	cont := func(_ context.Context, res *broker.Result) error {
		mu.Lock()
		runs[res.JobID]++
		states[res.JobID] = string(res.Continuation.State)
		mu.Unlock()
		done <- res.JobID
		return nil
	}
	st := startStack(t, nil, WithContinuation("test.count", cont))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 20
	ids := map[string]bool{}
	for i := 0; i < n; i++ {
		id, err := st.Origin().ProxyFetch(ctx, origin.FetchRequest{URL: st.TargetURL() + "/delay?ms=1"}, "test.count", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	for i := 0; i < n; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("only %d of %d continuations ran", i, n)
		}
	}
	// Re-publish every stored result under a new message id, as a crashed
	// executor's redelivered job would: the origin must suppress them all.
	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for id := range ids {
		mu.Lock()
		state := states[id]
		mu.Unlock()
		res := broker.Result{JobID: id, Origin: "o1", Status: 200, Attempt: 2, Executor: "replay",
			Continuation: broker.Continuation{Name: "test.count", State: json.RawMessage(state)}}
		data, _ := res.Encode()
		if _, err := js.Publish(ctx, broker.Subjects{}.Result("o1"), data, jetstream.WithMsgID("replay-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.Origin().Stats().Duplicates < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := st.Origin().Stats().Duplicates; got != n {
		t.Errorf("duplicates suppressed = %d, want %d", got, n)
	}
	for id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %s: continuation ran %d times, want 1", id, runs[id])
		}
		var s map[string]int
		if err := json.Unmarshal([]byte(states[id]), &s); err != nil {
			t.Errorf("job %s: state %q not the JSON we sent", id, states[id])
		}
	}
}

func TestContinuationErrorIsRetried(t *testing.T) {
	var calls atomic.Int32
	ok := make(chan struct{})
	cont := func(_ context.Context, res *broker.Result) error {
		if calls.Add(1) == 1 {
			return errTest
		}
		close(ok)
		return nil
	}
	st := startStack(t, nil, WithContinuation("test.flaky", cont))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Origin().ProxyFetch(ctx, origin.FetchRequest{URL: st.TargetURL() + "/delay"}, "test.flaky", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ok:
	case <-ctx.Done():
		t.Fatal("continuation not retried after an error")
	}
	if _, err := st.Origin().ProxyFetch(ctx, origin.FetchRequest{URL: st.TargetURL()}, "no.such", nil); err == nil {
		t.Error("ProxyFetch with an unregistered continuation succeeded, want ErrUnknownContinuation")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	st := startStack(t, nil)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(st.OriginHTTP() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s = %d, want 200", p, resp.StatusCode)
		}
	}
}

func onlyOrigin(c *config.Config) {
	c.NATS.Embedded = false
	c.Executor.Count = 0
	c.Runtime.Enabled = false
	c.Target.Enabled = false
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("injected failure")

func itoa(i int) string { return strconv.Itoa(i) }

// TestPingIsAnsweredAndCloseIsEchoed covers the control frames the session
// writer sends for gorilla's reader: a pong per ping (same payload) and the
// close handshake.
func TestPingIsAnsweredAndCloseIsEchoed(t *testing.T) {
	st := startStack(t, nil)
	c := testutil.DialWS(t, st.OriginWS())
	pong := make(chan string, 1)
	c.Conn.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.Conn.WriteControl(websocket.PingMessage, []byte("are-you-there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Pongs are delivered while reading; a fetch gives the reader frames to read.
	if _, res := c.Fetch("p", st.TargetURL()+"/delay", nil); res.Type != "result" {
		t.Fatalf("got %+v", res)
	}
	select {
	case got := <-pong:
		if got != "are-you-there" {
			t.Errorf("pong payload %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	if err := c.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.Conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after our close got %v, want the close echoed with 1000", err)
	}
}
