package target

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCountAndSeen(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, p := range []string{"/count?tag=a", "/count?tag=a&ms=1", "/count?tag=b"} {
		if code, body := get(p); code != 200 {
			t.Fatalf("%s: got %d %s", p, code, body)
		}
	}
	if code, _ := get("/count"); code != http.StatusBadRequest {
		t.Errorf("/count without tag: got %d, want 400", code)
	}
	if code, _ := get("/count?tag=c&ms=-1"); code != http.StatusBadRequest {
		t.Errorf("bad ms: got %d, want 400", code)
	}
	var one struct {
		Tag   string `json:"tag"`
		Count int    `json:"count"`
	}
	_, body := get("/seen?tag=a")
	if err := json.Unmarshal(body, &one); err != nil || one.Count != 2 || one.Tag != "a" {
		t.Errorf("/seen?tag=a: got %s", body)
	}
	var all struct {
		Counts map[string]int `json:"counts"`
	}
	_, body = get("/seen?prefix=")
	if err := json.Unmarshal(body, &all); err != nil || len(all.Counts) != 2 || all.Counts["b"] != 1 {
		t.Errorf("/seen?prefix=: got %s (c was refused and must not count)", body)
	}
	// Each Handler has its own counts.
	other := httptest.NewServer(Handler())
	defer other.Close()
	resp, err := http.Get(other.URL + "/seen?tag=a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &one); err != nil || one.Count != 0 {
		t.Errorf("a second Handler saw %s, want count 0", b)
	}
}
