package stack

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestCallThroughEveryVia exercises the origin's /call caller end to end:
// inline, over NATS to the runtime service, and over HTTP to its HTTP side.
func TestCallThroughEveryVia(t *testing.T) {
	st := startStack(t, nil)
	for _, via := range []string{"direct", "nats", "http"} {
		resp, err := http.Post(st.OriginHTTP()+"/call/transform?via="+via, "application/json", strings.NewReader(`{"data":"héllo ǆ"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"data":"HÉLLO Ǆ","length":9}` {
			t.Errorf("via %s: %d %s", via, resp.StatusCode, body)
		}
		resp, err = http.Post(st.OriginHTTP()+"/call/compute?via="+via, "application/json", strings.NewReader(`{"data":"x","rounds":0}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"error"`) {
			t.Errorf("via %s bad rounds: %d %s, want 400 with an error", via, resp.StatusCode, body)
		}
	}
}
