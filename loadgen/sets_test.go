package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Two sets run side by side on their own connections and targets, and are
// reported apart; a set that stops with the first is marked so.
func TestRunSetsReportsEachSet(t *testing.T) {
	noLeaks(t)
	target := newTestTarget(t)
	origin := newFakeOrigin(t, 0)
	base := Config{Origins: []string{origin.URL()}, Timeout: 5 * time.Second, Logger: testLogger(t)}
	main, noisy := base, base
	main.TargetURL, main.Concurrency, main.Requests = target.srv.URL+"/delay?ms=1", 4, 40
	noisy.TargetURL, noisy.Concurrency, noisy.Requests = target.srv.URL+"/delay?ms=200", 8, 100000
	rep, err := RunSets(context.Background(), []Set{
		{Name: "main", Config: main},
		{Name: "noisy", Config: noisy, StopWithFirst: true},
	})
	if err != nil {
		t.Fatalf("RunSets: %v", err)
	}
	if len(rep.Sets) != 2 || rep.Sets[0].Name != "main" || rep.Sets[1].Name != "noisy" {
		t.Fatalf("got sets %+v, want main and noisy", rep.Sets)
	}
	m, n := rep.Sets[0], rep.Sets[1]
	if m.OK != 40 || m.Stopped {
		t.Errorf("main: %d ok (stopped %v), want 40 and not stopped", m.OK, m.Stopped)
	}
	if !n.Stopped || n.Requests >= 100000 || n.Concurrency != 8 || !strings.Contains(n.TargetURL, "ms=200") {
		t.Errorf("noisy: stopped %v, %d requests, concurrency %d, target %s; want stopped early with its own load", n.Stopped, n.Requests, n.Concurrency, n.TargetURL)
	}
	var text, js, html bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"== set main ==", "== set noisy (stopped", "p99 ms"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mode string `json:"mode"`
		Sets []struct {
			Name     string `json:"name"`
			Requests int64  `json:"requests"`
		} `json:"sets"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.Mode != "sets" || len(doc.Sets) != 2 || doc.Sets[0].Name != "main" || doc.Sets[0].Requests != 40 {
		t.Errorf("JSON report %s (err %v), want mode sets with main's 40 requests", js.String(), err)
	}
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html.String(), "noisy: p99") || !strings.Contains(html.String(), "main: throughput") {
		t.Error("HTML report lacks the per-set cards")
	}
}
