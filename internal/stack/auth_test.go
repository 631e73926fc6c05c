package stack

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestBearerTokenOnWebSocketAndCall(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.AuthToken = "s3cret" })

	// No token, or a wrong one in the header: 401 before any upgrade.
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer nope"}}, {"Authorization": {"Basic s3cret"}}} {
		conn, resp, err := websocket.DefaultDialer.Dial(st.OriginWS(), h)
		if err == nil {
			conn.Close()
			t.Fatalf("header %v: upgraded, want 401", h)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("header %v: %v, want 401", h, resp)
		}
	}

	// A wrong ?access_token= (a browser): one unauthorized error frame, then
	// a close.
	conn, _, err := websocket.DefaultDialer.Dial(st.OriginWS()+"?access_token=nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var f testutil.Frame
	_ = json.Unmarshal(data, &f)
	if f.Type != "error" || f.Code != "unauthorized" {
		t.Fatalf("got %s, want an unauthorized error frame", data)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("after unauthorized got %v, want close 1008", err)
	}
	conn.Close()

	// The right token in the header or the query.
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
	}{
		{"header", st.OriginWS(), http.Header{"Authorization": {"Bearer s3cret"}}},
		{"query", st.OriginWS() + "?access_token=s3cret", nil},
	} {
		conn, _, err := websocket.DefaultDialer.Dial(tc.url, tc.header)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var f testutil.Frame
		if err := conn.ReadJSON(&f); err != nil || f.Type != "hello" {
			t.Errorf("%s: first frame %+v (%v), want hello", tc.name, f, err)
		}
		conn.Close()
	}

	resp, err := http.Post(st.OriginHTTP()+"/call/echo?via=direct", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/call without token = %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", st.OriginHTTP()+"/call/echo?via=direct", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/call with token = %d, want 200", resp.StatusCode)
	}
}

func TestBrowserOriginCheck(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Origin.AllowedOrigins = []string{"https://app.example"} })
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://app.example", true},
		{"https://evil.example", false},
	} {
		checkBrowserOrigin(t, st.OriginWS(), tc.origin, "", tc.ok)
	}
}

// TestBrowserOriginDefaultIsListenAddress: with no allowed_origins, only a
// page from the origin's own listen address may open the WebSocket; a DNS
// rebinding page (whose Host header matches its Origin) may not.
func TestBrowserOriginDefaultIsListenAddress(t *testing.T) {
	st := startStack(t, nil)
	addr := strings.TrimPrefix(st.OriginHTTP(), "http://")
	_, port, _ := strings.Cut(addr, ":")
	checkBrowserOrigin(t, st.OriginWS(), "http://"+addr, "", true)
	checkBrowserOrigin(t, st.OriginWS(), "http://rebind.example:"+port, "rebind.example:"+port, false)
	checkBrowserOrigin(t, st.OriginWS(), "http://localhost:"+port, "localhost:"+port, false)
}

// checkBrowserOrigin dials wsURL with Origin origin (and Host host, if
// set) and checks it is upgraded (ok) or refused with 403.
func checkBrowserOrigin(t *testing.T, wsURL, origin, host string, ok bool) {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	if host != "" {
		h.Set("Host", host)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(wsURL, h)
	if ok != (err == nil) {
		t.Errorf("origin %q host %q: err %v, want ok=%v", origin, host, err, ok)
	}
	if err == nil {
		conn.Close()
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("origin %q: refused with %v, want 403", origin, resp)
	}
}

// TestRuntimeHTTPToken: with runtime.auth_token set, the runtime's HTTP
// side refuses calls without it, and the origin's /call?via=http, which
// sends it, still works.
func TestRuntimeHTTPToken(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.Runtime.AuthToken = "rt-s3cret"; c.Runtime.Listen = "127.0.0.1:0" })
	for _, path := range []string{"/rpc/echo", "/metrics"} {
		resp, err := http.Post(st.RuntimeHTTP()+path, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("runtime %s without token = %d, want 401", path, resp.StatusCode)
		}
	}
	resp, err := http.Post(st.OriginHTTP()+"/call/echo?via=http", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/call via http with the runtime token configured = %d, want 200", resp.StatusCode)
	}
}
