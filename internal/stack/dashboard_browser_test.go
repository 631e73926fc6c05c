package stack

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// chromiumPath finds a Chromium or Chrome binary: $CHROMIUM_BIN, else
// Debian's chromium package (/usr/bin/chromium), else one on PATH.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// dashboardView is what the page shows, read from its elements.
type dashboardView struct {
	Status      string `json:"status"`
	Polls       string `json:"polls"`
	Connections string `json:"connections"`
	JobsTotal   string `json:"jobs"`
	JobsPerS    string `json:"jobsPerS"`
	Executors   string `json:"executors"`
	QueueDepth  string `json:"queue"`
	P50Total    string `json:"p50"`
	P99Fetch    string `json:"p99fetch"`
	InvalidURL  string `json:"invalidURL"`
}

const readDashboard = `(() => {
  const t = id => (document.getElementById(id) || {}).textContent || "";
  const row = document.querySelector('#errors tr[data-code="invalid_url"] td:last-child');
  return {
    status: document.getElementById("status").className,
    polls: document.getElementById("status").dataset.polls || "0",
    connections: t("connections"), jobs: t("jobs-total"), jobsPerS: t("jobs-per-s"),
    executors: t("executors"), queue: t("queue-depth"),
    p50: t("p50-total"), p99fetch: t("p99-fetch"),
    invalidURL: row ? row.textContent : "",
  };
})()`

// TestDashboardInBrowser loads the origin's dashboard in headless Chromium,
// drives a few fetches over a WebSocket and checks that the page's numbers
// change. Set DASHBOARD_SCREENSHOT=file.png to keep a screenshot.
func TestDashboardInBrowser(t *testing.T) {
	path := chromiumPath()
	if path == "" {
		t.Skip("no Chromium found (Debian: apt-get install chromium; or set CHROMIUM_BIN): skipping the dashboard browser test")
	}
	st := startStack(t, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	read := func() dashboardView {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[dashboardView](readDashboard))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return v
	}
	// waitUntil polls the page until ok holds.
	waitUntil := func(what string, ok func(dashboardView) bool) dashboardView {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			v := read()
			if ok(v) {
				return v
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Fatalf("dashboard never showed %s; last view %+v", what, v)
			}
			time.Sleep(150 * time.Millisecond)
		}
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(st.OriginHTTP()+"/")); err != nil {
		t.Fatalf("load the dashboard (Chromium at %s): %v", path, err)
	}
	before := waitUntil("its first poll", func(v dashboardView) bool { return v.Status == "live" })
	if before.JobsTotal != "0" || before.Connections != "0" || before.P50Total != "–" || before.InvalidURL != "" {
		t.Fatalf("idle dashboard shows %+v, want 0 jobs, 0 connections, no percentiles, no errors", before)
	}

	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 5; i++ {
		if _, res := c.Fetch("b-"+itoa(i), st.TargetURL()+"/delay?ms=3", nil); res.Type != "result" {
			t.Fatalf("fetch: got %+v, want result", res)
		}
	}
	if _, res := c.Fetch("b-bad", "gopher://example.com/", nil); res.Code != "invalid_url" {
		t.Fatalf("got %+v, want invalid_url", res)
	}

	after := waitUntil("the fetches", func(v dashboardView) bool {
		return v.JobsTotal == "6" && v.Connections == "1" && v.Executors == "1" &&
			v.P50Total != "–" && v.P99Fetch != "–" && v.InvalidURL == "1" &&
			v.JobsPerS != "0.0" && v.JobsPerS != "–" && v.QueueDepth == "0"
	})
	t.Logf("dashboard after 6 fetches: %+v", after)
	if before.Polls == after.Polls {
		t.Errorf("the page did not poll again (polls %s)", after.Polls)
	}

	if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
