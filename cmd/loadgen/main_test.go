package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/loadgen"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// parseFlags parses args as fetch mode does: the same flag definitions
// (defaults included) and the same validation, without running anything.
func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := pflag.NewFlagSet("loadgen", pflag.ContinueOnError)
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, noArgs(nil, fs.Args())
	}
	return o, o.validate(fs)
}

func noLeaks(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}

func TestEmbeddedRunWritesReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline")
	}
	noLeaks(t)
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	code, stdout, stderr := runCLI(t, "--embedded", "--concurrency", "10", "--requests", "200",
		"--target-url", "/delay?ms=1", "--baseline", "--json", jsonPath, "--html", htmlPath, "--log-level", "error")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"requests 200  ok 200  errors 0", "end to end", "added by pipeline", "status  200: 200"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "embedded pipeline: origin ws://127.0.0.1:") {
		t.Errorf("stderr does not say where the pipeline listens:\n%s", stderr)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	for _, k := range []string{"mode", "concurrency", "requests", "ok", "errors", "duration_s", "throughput_rps",
		"latency_ms", "phases", "errors_by_code", "baseline_latency_ms", "added_latency_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
	if m["ok"] != 200.0 || m["warmup_requests"] != 20.0 {
		t.Errorf("ok %v warmup %v, want 200 and auto warm-up 20", m["ok"], m["warmup_requests"])
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("<svg")) || bytes.Contains(page, []byte("<script src")) {
		t.Errorf("HTML report is not a self-contained page with charts")
	}
}

func TestEmbeddedSweepJSONToStdout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline")
	}
	noLeaks(t)
	code, stdout, stderr := runCLI(t, "--embedded", "--sweep", "1,8", "--sweep-rounds", "3",
		"--target-url", "/delay?ms=2", "--json", "-", "--log-level", "error")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var sw struct {
		Mode string `json:"mode"`
		Runs []struct {
			Concurrency int     `json:"concurrency"`
			Requests    int     `json:"requests"`
			OK          int     `json:"ok"`
			PctOfLinear float64 `json:"pct_of_linear"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(stdout), &sw); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	if sw.Mode != "sweep" || len(sw.Runs) != 2 || sw.Runs[1].Concurrency != 8 || sw.Runs[1].Requests != 24 || sw.Runs[1].OK != 24 {
		t.Errorf("sweep report %+v, want levels 1 and 8 with 3 and 24 fetches", sw)
	}
	if sw.Runs[0].PctOfLinear != 100 {
		t.Errorf("first level %% of linear %v, want 100", sw.Runs[0].PctOfLinear)
	}
}

func TestNoOriginFailsClearly(t *testing.T) {
	noLeaks(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	srv.Close()
	code, stdout, stderr := runCLI(t, "--origin", dead, "--requests", "5", "--log-level", "error")
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	if !strings.Contains(stderr, "no origin answered") || !strings.Contains(stderr, dead) || !strings.Contains(stderr, "pipeline up") {
		t.Errorf("stderr does not explain the failure:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--concurrency", "0"},
		{"--sweep", "10,x"},
		{"--warmup", "soon"},
		{"--embedded", "--origin", "ws://127.0.0.1:1/ws"},
		{"--rate", "-1"},
		{"--header", "novalue"},
		{"stray"},
		{"--no-such-flag"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, stderr)
		}
	}
	code, _, stderr := runCLI(t, "-h")
	if code != exitOK || !strings.Contains(stderr, "Examples:") || !strings.Contains(stderr, "--embedded") {
		t.Errorf("-h: exit %d, usage:\n%s", code, stderr)
	}
}

func TestOptionDefaults(t *testing.T) {
	tests := []struct {
		args            []string
		wantConcurrency int
		wantRequests    int
		wantWarmupN     int
	}{
		{nil, 100, 10000, 1000},
		{[]string{"--requests", "50", "--concurrency", "10"}, 10, 50, 10},
		{[]string{"--rate", "5000"}, 500, 10000, 1000},
		{[]string{"--rate", "50"}, 100, 10000, 1000},
		{[]string{"--rate", "5000", "--concurrency", "7"}, 7, 10000, 1000},
		{[]string{"--warmup", "0"}, 100, 10000, 0},
		{[]string{"--warmup", "42"}, 100, 10000, 42},
	}
	for _, tc := range tests {
		o, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		n, _ := o.warmupFor(o.concurrency, o.requests)
		if o.concurrency != tc.wantConcurrency || o.requests != tc.wantRequests || n != tc.wantWarmupN {
			t.Errorf("%v: concurrency %d requests %d warm-up %d, want %d %d %d", tc.args,
				o.concurrency, o.requests, n, tc.wantConcurrency, tc.wantRequests, tc.wantWarmupN)
		}
	}
	o, err := parseFlags([]string{"--duration", "10s", "--origin", "ws://a/ws,ws://b/ws", "--origin", "ws://c/ws"})
	if err != nil {
		t.Fatal(err)
	}
	if n, d := o.warmupFor(o.concurrency, o.requests); o.requests != 0 || n != 0 || d.Seconds() != 1 {
		t.Errorf("--duration 10s: requests %d warm-up %d/%v, want 0 and 1s", o.requests, n, d)
	}
	if len(o.origins) != 3 {
		t.Errorf("origins %v, want 3", o.origins)
	}
	if got := o.targetFor("http://t:1"); got != "http://t:1/delay?ms=0" {
		t.Errorf("default target %q", got)
	}
	o.targetURL = "/status?code=500"
	if got := o.targetFor("http://t:1"); got != "http://t:1/status?code=500" {
		t.Errorf("relative target %q", got)
	}
}

func TestInterruptWritesPartialReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline")
	}
	noLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testutil.LockedBuffer
	args := []string{"--embedded", "--concurrency", "4", "--requests", "100000000", "--warmup", "0", "--log-level", "error"}
	done := make(chan int)
	go func() { done <- run(ctx, args, &out, &errb) }()
	// Cancel once the pipeline is up and fetches flow.
	for !strings.Contains(errb.String(), "embedded pipeline") {
		select {
		case code := <-done:
			t.Fatalf("exited early with %d: %s", code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	code := <-done
	if code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, errb.String())
	}
	if !strings.Contains(errb.String(), "interrupted") || !strings.Contains(out.String(), "end to end") {
		t.Errorf("want a partial table and a note; stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	p := newProgressLine(&b)
	p.update(loadgen.Progress{Phase: "measure", Elapsed: time.Second, Issued: 600, OK: 500, Errors: 2, InFlight: 98, Requests: 1000})
	line := b.String()
	for _, want := range []string{"\r\x1b[K", "measure", "[============", " 50%", "ok 500", "err 2", "in flight 98", "502/s"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	b.Reset()
	p.update(loadgen.Progress{Phase: "measure", Done: true})
	if b.String() != "\r\x1b[K" {
		t.Errorf("final update %q, want the line erased", b.String())
	}
}
