package testutil

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// HTTPClient is an HTTP client whose idle connections are closed at test
// end (so that goleak sees no leftover goroutines).
func HTTPClient(tb testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Post POSTs body to url and returns the reply's status, header and body.
func Post(t testing.TB, c *http.Client, url string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return resp.StatusCode, resp.Header, out
}

// CheckErrorReply checks an HTTP error reply: status, JSON content type and
// an {"error":"..."} body containing msg.
func CheckErrorReply(t testing.TB, status int, h http.Header, body []byte, wantStatus int, msg string) {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if status != wantStatus || json.Unmarshal(body, &e) != nil || e.Error == nil || !strings.Contains(*e.Error, msg) {
		t.Fatalf("got %d %q, want %d with {\"error\":\"...%s...\"}", status, body, wantStatus, msg)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error content type %q, want application/json", ct)
	}
}
