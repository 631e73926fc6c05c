package stack

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// Hostile inputs through the real pipeline: a WebSocket client, the origin,
// JetStream, an executor with the default destination policy, and targets
// that misbehave. Each case ends in the exact typed error frame (or result)
// the protocol promises, and the connection keeps working.

const hostileMaxBody = 64 << 10 // the executor's max_body_bytes in these tests

// hostileTarget serves misbehaving responses on 127.0.0.1.
type hostileTarget struct {
	srv       *httptest.Server
	bomb      []byte       // gzip stream of 1 GiB of zeros
	bombSent  atomic.Int64 // compressed bytes written
	loopHits  atomic.Int64
	slowConns atomic.Int64
}

func newHostileTarget(t *testing.T) *hostileTarget {
	t.Helper()
	h := &hostileTarget{bomb: gzipBomb(t)}
	mux := http.NewServeMux()
	mux.HandleFunc("/bigheaders", func(w http.ResponseWriter, r *http.Request) {
		kb, _ := strconv.Atoi(r.URL.Query().Get("kb"))
		v := strings.Repeat("a", 1000)
		for i := 0; i < kb; i++ {
			w.Header().Set("X-Big-"+strconv.Itoa(i), v)
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/gzipbomb", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Encoding", "gzip")
		for off := 0; off < len(h.bomb); off += 32 << 10 {
			n, err := w.Write(h.bomb[off:min(off+32<<10, len(h.bomb))])
			h.bombSent.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		h.loopHits.Add(1)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		http.Redirect(w, r, "/loop?n="+strconv.Itoa(n+1), http.StatusFound)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Hop-by-hop and internal headers in the response must not reach
		// the client either.
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", `Basic realm="x"`)
		w.Header().Set("X-Pipeline-Spoof", "1")
		w.Header().Set("Nats-Msg-Id", "spoofed")
		w.Header().Set("X-Target", "echo")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{
			Header: r.Header, Host: r.Host, TransferEncoding: r.TransferEncoding,
			ContentLength: r.ContentLength, Close: r.Close,
		})
	})
	mux.HandleFunc("/slowheaders", func(w http.ResponseWriter, r *http.Request) {
		// Slowloris in reverse: the status line, one byte every 50 ms.
		h.slowConns.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		for _, b := range []byte("HTTP/1.1 200 OK\r\nX-Slow: " + strings.Repeat("s", 200)) {
			if _, err := conn.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// echoed is what /echo reports about the request it received.
type echoed struct {
	Header           http.Header `json:"header"`
	Host             string      `json:"host"`
	TransferEncoding []string    `json:"transfer_encoding"`
	ContentLength    int64       `json:"content_length"`
	Close            bool        `json:"close"`
}

func (h *hostileTarget) URL() string  { return h.srv.URL }
func (h *hostileTarget) Addr() string { return h.srv.Listener.Addr().String() }

// gzipBomb returns a gzip stream that inflates to 1 GiB of zeros: 1024
// members of 1 MiB each (gzip readers, Go's included, read every member),
// about 2 MB compressed.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var one bytes.Buffer
	zw, err := gzip.NewWriterLevel(&one, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(one.Bytes(), 1024)
}

// unlistedTarget listens on 127.0.0.1 on a port the policy does not allow
// and counts requests; none may ever arrive.
func unlistedTarget(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("you should not be here"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), hits
}

// startHostileStack starts the pipeline with the hostile target allow-listed.
func startHostileStack(t *testing.T, h *hostileTarget) *Stack {
	t.Helper()
	return startStack(t, func(c *config.Config) {
		c.Executor.Fetcher.MaxBodyBytes = hostileMaxBody
		c.Origin.MaxFrameBytes = 8 << 10
		c.Origin.HardFrameBytes = 64 << 10
		c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, h.Addr())
	})
}

// wantFinal checks that a fetch ended in error code (with its job id when it
// was enqueued), or in a result when code is "".
func wantFinal(t *testing.T, id string, enq, f testutil.Frame, code string) {
	t.Helper()
	if code == "" {
		if f.Type != "result" || f.ID != id || f.Job != enq.Job {
			t.Fatalf("got %+v, want a result for %s (job %s)", f, id, enq.Job)
		}
		return
	}
	if f.Type != "error" || f.Code != code || f.ID != id || f.Message == "" {
		t.Fatalf("got %+v, want error %s for %s", f, code, id)
	}
	if enq.Job != "" && f.Job != enq.Job {
		t.Errorf("error frame job %q, want the enqueued job %q", f.Job, enq.Job)
	}
}

func TestHostileTargets(t *testing.T) {
	h := newHostileTarget(t)
	st := startHostileStack(t, h)
	c := testutil.DialWS(t, st.OriginWS())
	unlisted, unlistedHits := unlistedTarget(t)
	nest := func(to string, n int) string {
		for i := 0; i < n; i++ {
			to = h.URL() + "/redirect?to=" + url.QueryEscape(to)
		}
		return to
	}
	cases := []struct {
		name  string
		url   string
		extra map[string]any
		code  string // "" = a result, checked by check
		check func(t *testing.T, f testutil.Frame)
		// within bounds the whole fetch (a blown executor would not answer).
		within time.Duration
	}{
		{name: "response headers over the limit", url: h.URL() + "/bigheaders?kb=100", code: "fetch_failed"},
		{name: "response headers under the limit", url: h.URL() + "/bigheaders?kb=10", check: func(t *testing.T, f testutil.Frame) {
			if f.Status != 200 || f.Headers["x-big-9"] == "" {
				t.Errorf("got status %d, %d headers, want 200 with the big headers", f.Status, len(f.Headers))
			}
		}},
		{name: "gzip bomb is cut at max_body_bytes", url: h.URL() + "/gzipbomb", within: 10 * time.Second, check: func(t *testing.T, f testutil.Frame) {
			if f.Status != 200 || !f.Truncated || f.BodyEncoding != "utf8" || len(f.Body) != hostileMaxBody {
				t.Fatalf("got status %d truncated %v encoding %s body %d bytes, want 200, truncated, %d bytes",
					f.Status, f.Truncated, f.BodyEncoding, len(f.Body), hostileMaxBody)
			}
			if strings.Trim(f.Body, "\x00") != "" {
				t.Error("body is not the inflated zeros")
			}
		}},
		{name: "gzip bomb with accept-encoding is passed through compressed", url: h.URL() + "/gzipbomb", within: 10 * time.Second,
			extra: map[string]any{"headers": map[string]string{"accept-encoding": "gzip"}},
			check: func(t *testing.T, f testutil.Frame) {
				b, err := base64.StdEncoding.DecodeString(f.Body)
				if f.Status != 200 || !f.Truncated || f.BodyEncoding != "base64" || err != nil || len(b) != hostileMaxBody {
					t.Fatalf("got status %d truncated %v encoding %s body %d bytes (%v), want 200, truncated, base64 of %d bytes",
						f.Status, f.Truncated, f.BodyEncoding, len(b), err, hostileMaxBody)
				}
				if f.Headers["content-encoding"] != "gzip" {
					t.Errorf("content-encoding %q, want gzip", f.Headers["content-encoding"])
				}
			}},
		{name: "slow drip body", url: st.TargetURL() + "/drip?n=100&ms=100", extra: map[string]any{"timeout_ms": 300}, code: "timeout", within: 5 * time.Second},
		{name: "slow status line", url: h.URL() + "/slowheaders", extra: map[string]any{"timeout_ms": 300}, code: "timeout", within: 5 * time.Second},
		{name: "redirect chain ending at a private address", url: nest("http://10.0.0.1/", 3), code: "blocked_destination"},
		{name: "redirect to cloud metadata", url: nest("http://169.254.169.254/latest/meta-data/", 1), code: "blocked_destination"},
		{name: "redirect to an unlisted loopback port", url: nest("http://"+unlisted+"/", 1), code: "blocked_destination"},
		{name: "redirect to localhost", url: nest("http://localhost:"+port(unlisted)+"/", 1), code: "blocked_destination"},
		{name: "redirect to IPv6 loopback", url: nest("http://[::1]:"+port(unlisted)+"/", 1), code: "blocked_destination"},
		{name: "redirect to a decimal loopback", url: nest("http://2130706433:"+port(unlisted)+"/", 1), code: "blocked_destination"},
		{name: "redirect to a file URL", url: nest("file:///etc/passwd", 1), code: "invalid_url"},
		{name: "redirect within the allow-list", url: nest(h.URL()+"/echo", 2), check: func(t *testing.T, f testutil.Frame) {
			if f.Status != 200 || f.Headers["x-target"] != "echo" {
				t.Errorf("got status %d headers %v, want the echo", f.Status, f.Headers)
			}
		}},
		{name: "too many redirects", url: h.URL() + "/loop?n=0", code: "fetch_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.SetT(t)
			id := "h-" + strings.ReplaceAll(tc.name, " ", "-")
			start := time.Now()
			enq, f := c.Fetch(id, tc.url, tc.extra)
			took := time.Since(start)
			wantFinal(t, id, enq, f, tc.code)
			if tc.check != nil {
				tc.check(t, f)
			}
			if tc.within > 0 && took > tc.within {
				t.Errorf("took %v, want under %v", took, tc.within)
			}
		})
	}
	c.SetT(t)
	if n := h.loopHits.Load(); n == 0 || n > 30 {
		t.Errorf("redirect loop served %d requests, want a few (max_redirects+1 per attempt)", n)
	} else {
		t.Logf("redirect loop served %d requests", n)
	}
	if n := h.bombSent.Load(); n >= int64(len(h.bomb)) {
		// Not fatal: loopback socket buffers may swallow the whole ~1 MB.
		t.Logf("the target wrote the whole gzip bomb (%d bytes); the executor still stopped inflating at the limit", n)
	}
	if n := unlistedHits.Load(); n != 0 {
		t.Fatalf("the unlisted target received %d requests, want 0", n)
	}
	// The connection survived everything.
	_, res := c.Fetch("after", st.TargetURL()+"/delay?ms=0", nil)
	wantFinal(t, "after", testutil.Frame{Job: res.Job}, res, "")
}

func TestHostileURLForms(t *testing.T) {
	h := newHostileTarget(t)
	st := startHostileStack(t, h)
	c := testutil.DialWS(t, st.OriginWS())
	unlisted, unlistedHits := unlistedTarget(t)
	up, ap := port(unlisted), port(h.Addr()) // unlisted and allow-listed ports
	cases := []struct {
		url  string
		code string // "" = a result
	}{
		// Every spelling of loopback on a port the policy does not allow is
		// refused as loopback, userinfo or not.
		{"http://user@127.0.0.1:" + up + "/", "blocked_destination"},
		{"http://user:pw@127.0.0.1:" + up + "/", "blocked_destination"},
		{"http://2130706433:" + up + "/", "blocked_destination"},
		{"http://0177.0.0.1:" + up + "/", "blocked_destination"},
		{"http://0x7f.0.0.1:" + up + "/", "blocked_destination"},
		{"http://0x7f000001:" + up + "/", "blocked_destination"},
		{"http://127.1:" + up + "/", "blocked_destination"},
		{"http://[::ffff:127.0.0.1]:" + up + "/", "blocked_destination"},
		{"http://[::ffff:7f00:1]:" + up + "/", "blocked_destination"},
		{"http://[::1]:" + up + "/", "blocked_destination"},
		{"http://localhost:" + up + "/", "blocked_destination"},
		{"http://LOCALHOST.:" + up + "/", "blocked_destination"},
		{"http://0.0.0.0:" + up + "/", "blocked_destination"},
		{"http://[::]:" + up + "/", "blocked_destination"},
		// On the allow-listed port: userinfo and ambiguous numeric forms are
		// refused as invalid URLs, not silently normalised ...
		{"http://user@127.0.0.1:" + ap + "/echo", "invalid_url"},
		{"http://user:pw@127.0.0.1:" + ap + "/echo", "invalid_url"},
		{"http://2130706433:" + ap + "/echo", "invalid_url"},
		{"http://0177.0.0.1:" + ap + "/echo", "invalid_url"},
		{"http://0x7f.0.0.1:" + ap + "/echo", "invalid_url"},
		{"http://127.1:" + ap + "/echo", "invalid_url"},
		// ... while the IPv4-mapped IPv6 literal is the allow-listed address
		// itself (netpolicy matches ::ffff:a.b.c.d as a.b.c.d).
		{"http://[::ffff:127.0.0.1]:" + ap + "/echo", ""},
		{"http://127.0.0.1:" + ap + "/echo", ""},
	}
	for i, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			c.SetT(t)
			id := "u" + itoa(i)
			enq, f := c.Fetch(id, tc.url, nil)
			wantFinal(t, id, enq, f, tc.code)
		})
	}
	c.SetT(t)
	if n := unlistedHits.Load(); n != 0 {
		t.Fatalf("the unlisted target received %d requests, want 0", n)
	}
}

func TestHostileFrames(t *testing.T) {
	h := newHostileTarget(t)
	st := startHostileStack(t, h)
	c := testutil.DialWS(t, st.OriginWS())
	cases := []struct {
		name string
		send func()
		code string
	}{
		{"oversized frame", func() {
			c.SendJSON(map[string]any{"type": "start-fetch", "id": "big", "url": h.URL(), "body": strings.Repeat("a", 9<<10)})
		}, "too_large"},
		{"binary frame", func() {
			c.SendRaw(websocket.BinaryMessage, []byte(`{"type":"start-fetch","id":"bin","url":"http://a/"}`))
		}, "bad_request"},
		{"empty text frame", func() { c.SendRaw(websocket.TextMessage, nil) }, "bad_request"},
		{"deeply nested JSON", func() {
			c.SendRaw(websocket.TextMessage, []byte(strings.Repeat("[", 4000)+strings.Repeat("]", 4000)))
		}, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.SetT(t)
			tc.send()
			f := c.Read()
			if f.Type != "error" || f.Code != tc.code || f.ID != "" {
				t.Fatalf("got %+v, want error %s without an id", f, tc.code)
			}
		})
	}
	c.SetT(t)
	_, res := c.Fetch("after", st.TargetURL()+"/delay?ms=0", nil)
	wantFinal(t, "after", testutil.Frame{Job: res.Job}, res, "")
}

func TestHostileHopByHopHeadersAreNotForwarded(t *testing.T) {
	h := newHostileTarget(t)
	st := startHostileStack(t, h)
	c := testutil.DialWS(t, st.OriginWS())
	sent := map[string]string{
		"Connection":          "close, X-Conn-Listed",
		"Upgrade":             "websocket",
		"Proxy-Authorization": "Basic Zm9vOmJhcg==",
		"Proxy-Connection":    "keep-alive",
		"Transfer-Encoding":   "chunked",
		"Keep-Alive":          "timeout=5",
		"TE":                  "trailers",
		"Trailer":             "X-Trail",
		"Host":                "evil.example",
		"Content-Length":      "999",
		"X-Pipeline-Internal": "1",
		"Nats-Msg-Id":         "forged",
		"X-Ok":                "yes",
		"accept":              "application/json",
	}
	enq, res := c.Fetch("hop", h.URL()+"/echo", map[string]any{"headers": sent})
	wantFinal(t, "hop", enq, res, "")
	var got echoed
	if err := json.Unmarshal([]byte(res.Body), &got); err != nil {
		t.Fatalf("echo body %q: %v", res.Body, err)
	}
	for _, name := range []string{"Connection", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "Transfer-Encoding",
		"Keep-Alive", "Te", "Trailer", "X-Pipeline-Internal", "Nats-Msg-Id"} {
		if v, ok := got.Header[name]; ok {
			t.Errorf("target received %s: %q, want it dropped", name, v)
		}
	}
	if got.Host != h.Addr() {
		t.Errorf("target saw Host %q, want %q", got.Host, h.Addr())
	}
	if len(got.TransferEncoding) != 0 || got.ContentLength > 0 || got.Close {
		t.Errorf("target saw transfer-encoding %v, content-length %d, close %v; want none", got.TransferEncoding, got.ContentLength, got.Close)
	}
	if got.Header.Get("X-Ok") != "yes" || got.Header.Get("Accept") != "application/json" {
		t.Errorf("end-to-end headers lost: %v", got.Header)
	}
	// Response side: hop-by-hop and internal headers are not passed back.
	for _, name := range []string{"keep-alive", "proxy-authenticate", "x-pipeline-spoof", "nats-msg-id"} {
		if v, ok := res.Headers[name]; ok {
			t.Errorf("client received response header %s: %q, want it dropped", name, v)
		}
	}
	if res.Headers["x-target"] != "echo" {
		t.Errorf("response headers %v, want x-target", res.Headers)
	}
}

// TestHostileJobCannotTargetAnotherOrigin publishes, on origin o1's jobs
// subject, a job whose body claims to come from origin o2 — what a
// compromised origin o1 can do even with per-role NATS permissions, which
// only restrict subjects. Its result must not reach o2's results subject (o2
// would run the continuation named in the job, with the state the attacker
// chose).
func TestHostileJobCannotTargetAnotherOrigin(t *testing.T) {
	st := startStack(t, nil)
	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := broker.Subjects{}
	cons, err := js.CreateOrUpdateConsumer(ctx, broker.ResultsStream, jetstream.ConsumerConfig{
		Durable: "spy-o2", FilterSubject: s.Result("o2"), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	job := broker.Job{ID: "forged-1", Origin: "o2", URL: st.TargetURL() + "/echo",
		Continuation: broker.Continuation{Name: "ws.result", State: json.RawMessage(`{"s":"victim-session"}`)}}
	data, _ := job.Encode()
	if _, err := js.Publish(ctx, s.Job("o1"), data, jetstream.WithMsgID(job.ID)); err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		t.Fatalf("a job published on %s produced a result on %s: %s", s.Job("o1"), m.Subject(), m.Data())
	}
}

// port returns the port of a host:port address.
func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	return p
}
