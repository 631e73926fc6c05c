package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkSelfContained asserts that an HTML report loads nothing from the
// network and holds no broken numbers.
func checkSelfContained(t *testing.T, page string) {
	t.Helper()
	if !strings.HasPrefix(page, "<!doctype html>") || !strings.Contains(page, "</html>") {
		t.Errorf("not a complete HTML page")
	}
	if !strings.Contains(page, "<svg") {
		t.Errorf("no SVG chart")
	}
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|<script[^>]+src|<link[^>]+stylesheet`)
	if m := ext.FindString(page); m != "" {
		t.Errorf("page loads an external resource: %q", m)
	}
	for _, bad := range []string{"NaN", "Inf", "%!"} {
		if i := strings.Index(page, bad); i >= 0 {
			t.Errorf("page contains %q near %q", bad, page[max(0, i-80):min(len(page), i+40)])
		}
	}
}

func TestWriteHTML(t *testing.T) {
	noLeaks(t)
	target := newTestTarget(t)
	origin := newFakeOrigin(t, 0)
	rep, err := Run(context.Background(), Config{
		Origins:     []string{origin.URL()},
		TargetURL:   target.srv.URL + "/delay?ms=2",
		Concurrency: 10,
		Duration:    1200 * time.Millisecond, // two timeline seconds
		Baseline:    true,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var buf bytes.Buffer
	if err := rep.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkSelfContained(t, page)
	for _, want := range []string{"Latency CDF", "Percentile spectrum", "Latency histogram", "Throughput over time", "Phases", "direct fetch (baseline)", "throughput_rps"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if got := strings.Count(page, "<svg"); got != 4 {
		t.Errorf("%d charts, want 4", got)
	}
	if dir := os.Getenv("LOADGEN_HTML_DIR"); dir != "" { // to look at it
		_ = os.WriteFile(filepath.Join(dir, "report.html"), buf.Bytes(), 0o644)
	}

	// A report decoded from JSON has no histograms; the page still renders.
	buf.Reset()
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var decoded Report
	if err := json.Unmarshal(buf.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := decoded.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	checkSelfContained(t, buf.String())
}

func TestWriteHTMLEmptyAndDecoded(t *testing.T) {
	for _, r := range []*Report{
		{Mode: "fetch", ErrorsByCode: map[string]int64{"fetch_failed": 3}, Errors: 3, Requests: 3,
			Timeline: []TimelinePoint{{Second: 0, Errors: 3}}},
		{Mode: "fetch"},
	} {
		var buf bytes.Buffer
		if err := r.WriteHTML(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "</html>") {
			t.Error("incomplete page")
		}
		for _, bad := range []string{"NaN", "Inf"} {
			if strings.Contains(buf.String(), bad) {
				t.Errorf("page contains %s", bad)
			}
		}
	}
	var buf bytes.Buffer
	if err := (&SweepReport{Mode: "sweep"}).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
}

func TestAxisTicks(t *testing.T) {
	tests := []struct {
		a    axis
		want []float64
	}{
		{axis{lo: 0, hi: 10}, []float64{0, 2, 4, 6, 8, 10}},
		{axis{lo: 1, hi: 1000, log: true}, []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}},
		{axis{lo: 0.1, hi: 1e4, log: true}, []float64{0.1, 1, 10, 100, 1000, 10000}},
	}
	for _, tc := range tests {
		got := tc.a.ticks(5)
		if len(got) != len(tc.want) {
			t.Errorf("ticks(%+v) = %v, want %v", tc.a, got, tc.want)
			continue
		}
		for i := range got {
			if d := got[i] - tc.want[i]; d > 1e-9*tc.want[i]+1e-12 || d < -1e-9*tc.want[i]-1e-12 {
				t.Errorf("ticks(%+v) = %v, want %v", tc.a, got, tc.want)
				break
			}
		}
	}
}
