package target

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func get(t *testing.T, url string) (*http.Response, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp, nil
}

// TestLimited: /limited?rate=N lets N requests through at once, then
// answers 429 with Retry-After: 1; buckets are shared by name, and two
// handlers keep separate state.
func TestLimited(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	// A clock that does not move: exactly N tokens.
	ok, limited := 0, 0
	for i := 0; i < 15; i++ {
		resp, err := get(t, srv.URL+"/limited?rate=10&bucket=a")
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After = %q, want 1", ra)
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// The bucket refills at 10/s: over a slow test box, at most a few more
	// than 10 pass.
	if ok < 10 || ok > 12 || limited < 3 {
		t.Errorf("got %d ok and %d limited of 15 at rate 10, want 10..12 ok", ok, limited)
	}
	// Another bucket, and another handler, start full.
	if resp, err := get(t, srv.URL+"/limited?rate=10&bucket=b"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("bucket b: %v %v", resp, err)
	}
	srv2 := httptest.NewServer(Handler())
	defer srv2.Close()
	if resp, err := get(t, srv2.URL+"/limited?rate=10&bucket=a"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("second handler shares state: %v %v", resp, err)
	}
	if resp, err := get(t, srv.URL+"/limited"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no rate: %v %v, want 400", resp, err)
	}
}

func TestLimitedRefills(t *testing.T) {
	p := newPoliteness()
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	h := http.HandlerFunc(p.limited)
	status := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/limited?rate=4", nil))
		return rec.Code
	}
	for i := 0; i < 4; i++ {
		if c := status(); c != 200 {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if c := status(); c != 429 {
		t.Fatalf("5th request: %d, want 429", c)
	}
	now = now.Add(250 * time.Millisecond) // one token
	if c := status(); c != 200 {
		t.Fatalf("after 250ms: %d, want 200", c)
	}
	if c := status(); c != 429 {
		t.Fatalf("then: %d, want 429", c)
	}
}

// TestFlaky: the first N requests per key fail as asked, then 200.
func TestFlaky(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for i := 1; i <= 3; i++ {
		resp, err := get(t, srv.URL+"/flaky?key=k&fail=2&retry_after=2")
		if err != nil {
			t.Fatal(err)
		}
		want, wantRA := http.StatusServiceUnavailable, "2"
		if i == 3 {
			want, wantRA = http.StatusOK, ""
		}
		if resp.StatusCode != want || resp.Header.Get("Retry-After") != wantRA {
			t.Errorf("request %d: %d Retry-After %q, want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), want, wantRA)
		}
	}
	if resp, err := get(t, srv.URL+"/flaky?key=other&fail=1&status=500"); err != nil || resp.StatusCode != 500 {
		t.Errorf("other key: %v %v, want 500", resp, err)
	}
	// A fresh connection: the client would retry a GET that failed on a
	// reused one.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := fresh.Get(srv.URL + "/flaky?key=r&fail=1&mode=reset"); err == nil {
		_ = resp.Body.Close()
		t.Error("mode=reset: got a response, want a connection error")
	}
	if resp, err := get(t, srv.URL+"/flaky?key=r&fail=1&mode=reset"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the reset: %v %v, want 200", resp, err)
	}
}
