package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// startHTTP runs the runtime's HTTP side on a free loopback port, shut down
// by tb.Cleanup.
func startHTTP(tb testing.TB, reg *Registry) *HTTPServer {
	tb.Helper()
	srv := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Registry: reg})
	if err := srv.Start(context.Background()); err != nil {
		tb.Fatalf("start http: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown http: %v", err)
		}
	})
	return srv
}

func TestHTTPFunctions(t *testing.T) {
	srv := startHTTP(t, nil)
	c := testutil.HTTPClient(t)
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			status, h, out := testutil.Post(t, c, srv.URL()+"/rpc/"+tc.fn, tc.body)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, out)
			}
			if ct := h.Get("Content-Type"); ct != contentType(tc.fn) {
				t.Fatalf("content type %q, want %q", ct, contentType(tc.fn))
			}
			checkReply(t, tc.fn, tc.body, out)
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	srv := startHTTP(t, testRegistry())
	c := testutil.HTTPClient(t)
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			status, h, out := testutil.Post(t, c, srv.URL()+"/rpc/"+tc.fn, tc.body)
			testutil.CheckErrorReply(t, status, h, out, tc.code, tc.msg)
		})
	}
	t.Run("unknown-function", func(t *testing.T) {
		status, h, out := testutil.Post(t, c, srv.URL()+"/rpc/nope", nil)
		testutil.CheckErrorReply(t, status, h, out, 404, "unknown function")
	})
	t.Run("bad-path", func(t *testing.T) {
		status, h, out := testutil.Post(t, c, srv.URL()+"/rpc/echo/x", nil)
		testutil.CheckErrorReply(t, status, h, out, 404, "not found")
	})
	t.Run("get", func(t *testing.T) {
		resp, err := c.Get(srv.URL() + "/rpc/echo")
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		testutil.CheckErrorReply(t, resp.StatusCode, resp.Header, out, 405, "use POST")
	})
	t.Run("chunked-too-large", func(t *testing.T) {
		// No Content-Length: the limit is enforced while reading.
		resp, err := c.Post(srv.URL()+"/rpc/echo", "", io.MultiReader(bytes.NewReader(make([]byte, testLimits.MaxPayload)), strings.NewReader("x")))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		testutil.CheckErrorReply(t, resp.StatusCode, resp.Header, out, 413, "limit")
	})
}

func TestHTTPServerLifecycle(t *testing.T) {
	// Shutdown before Start is a no-op, and stops the server for good
	// (as net/http's Server): Start then fails with ErrStopped.
	early := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0"})
	if err := early.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := early.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Shutdown: got %v, want ErrStopped", err)
	}
	srv := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0"})
	if srv.Addr() != "" {
		t.Fatalf("Addr before Start: got %q", srv.Addr())
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: got %v, want ErrStarted", err)
	}
	addr := srv.Addr()
	if strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Addr: got %q, want the bound loopback address", addr)
	}
	// Taken port: a second server on the same address fails to start.
	other := NewHTTPServer(HTTPConfig{Addr: addr})
	if err := other.Start(context.Background()); err == nil {
		_ = other.Shutdown(context.Background())
		t.Fatal("start on a taken port: want an error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Shutdown: got %v, want ErrStopped", err)
	}
	if NewHTTPServer(HTTPConfig{}).cfg.Addr != DefaultHTTPAddr {
		t.Fatal("default address is not DefaultHTTPAddr")
	}
}

// TestHTTPToken: with AuthToken set, /rpc/ and the extra handlers need the
// bearer token (401 otherwise, logged once per 10 s however many), the
// health probes do not.
func TestHTTPToken(t *testing.T) {
	var logs lockedBuf
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("data")) })
	srv := NewHTTPServer(HTTPConfig{
		Addr: "127.0.0.1:0", AuthToken: "s3cret", Logger: zerolog.New(&logs),
		Handlers: map[string]http.Handler{"/metrics": ok, "/healthz": ok},
	})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c := testutil.HTTPClient(t)
	do := func(method, path, auth string) int {
		req, _ := http.NewRequest(method, srv.URL()+path, strings.NewReader("ping"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"POST", "/rpc/echo", "", 401},
		{"POST", "/rpc/echo", "Bearer nope", 401},
		{"POST", "/rpc/echo", "Basic s3cret", 401},
		{"POST", "/rpc/echo", "Bearer s3cret", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "bearer s3cret", 200},
		{"GET", "/healthz", "", 200},
		{"POST", "/nope", "", 401},
	} {
		if got := do(tc.method, tc.path, tc.auth); got != tc.want {
			t.Errorf("%s %s with %q: got %d, want %d", tc.method, tc.path, tc.auth, got, tc.want)
		}
	}
	for i := 0; i < 100; i++ {
		do("POST", "/rpc/echo", "Bearer guess-123")
	}
	if n := strings.Count(logs.String(), "request refused"); n != 1 {
		t.Errorf("%d refusal log lines for 105 refusals, want 1 (rate-limited):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "guess-123") {
		t.Errorf("a token reached the log: %s", logs.String())
	}
}

// lockedBuf is a bytes.Buffer safe for the server's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
