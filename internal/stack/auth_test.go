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

	// No token: one unauthorized error frame, then a close.
	conn, _, err := websocket.DefaultDialer.Dial(st.OriginWS(), nil)
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

	// Wrong token, right token in the header, right token in the query.
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
		want   string
	}{
		{"wrong", st.OriginWS(), http.Header{"Authorization": {"Bearer nope"}}, "error"},
		{"header", st.OriginWS(), http.Header{"Authorization": {"Bearer s3cret"}}, "hello"},
		{"query", st.OriginWS() + "?access_token=s3cret", nil, "hello"},
	} {
		conn, _, err := websocket.DefaultDialer.Dial(tc.url, tc.header)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var f testutil.Frame
		if err := conn.ReadJSON(&f); err != nil || f.Type != tc.want {
			t.Errorf("%s: first frame %+v (%v), want %s", tc.name, f, err, tc.want)
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
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(st.OriginWS(), h)
		if tc.ok != (err == nil) {
			t.Errorf("origin %q: err %v, want ok=%v", tc.origin, err, tc.ok)
		}
		if err == nil {
			conn.Close()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: refused with %v, want 403", tc.origin, resp)
		}
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
