package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestJobLogLinesCarryJobAndOriginAndNoSecrets runs fetches that succeed,
// fail at the origin, fail at the executor, time out and are retried, with
// logs at trace level, and checks every JSON log line: a line about a job
// names its origin too, and no line holds a request header value or a
// body.
func TestJobLogLinesCarryJobAndOriginAndNoSecrets(t *testing.T) {
	var logs testutil.LockedBuffer
	log := zerolog.New(&logs).Level(zerolog.TraceLevel).With().Timestamp().Logger()
	cfg := EphemeralConfig()
	cfg.Executor.Retry.BaseDelay = time.Millisecond
	cfg.Executor.Retry.MaxDelay = 2 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := st.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)

	const secretHeader = "Bearer hdr-s3cr3t-7f1c"
	const secretBody = "body-s3cr3t-91ab"
	const secretQuery = "qry-s3cr3t-42"
	c := testutil.DialWS(t, st.OriginWS())
	_, res := c.Fetch("ok", st.TargetURL()+"/echo?token="+secretQuery, map[string]any{
		"method":  "POST",
		"headers": map[string]string{"authorization": secretHeader},
		"body":    secretBody,
	})
	if res.Type != "result" || !strings.Contains(res.Body, secretBody) {
		t.Fatalf("echo: got %+v, want a result echoing the body", res)
	}
	if _, res := c.Fetch("bad", "ftp://x/", nil); res.Code != "invalid_url" {
		t.Fatalf("got %+v, want invalid_url", res)
	}
	if _, res := c.Fetch("blocked", "http://127.0.0.1:1/?k="+secretQuery, nil); res.Code != "blocked_destination" {
		t.Fatalf("got %+v, want blocked_destination", res)
	}
	if _, res := c.Fetch("slow", st.TargetURL()+"/delay?ms=2000&token="+secretQuery, map[string]any{"timeout_ms": 50}); res.Code != "timeout" {
		t.Fatalf("got %+v, want timeout", res)
	}
	if _, res := c.Fetch("retried", st.TargetURL()+"/status?code=503", nil); res.Type != "result" || res.Status != 503 {
		t.Fatalf("got %+v, want a 503 result after retries", res)
	}
	c.SendRaw(1, []byte(`{"type":"start-fetch","id":"x"`)) // malformed
	if f := c.Read(); f.Code != "bad_request" {
		t.Fatalf("got %+v, want bad_request", f)
	}
	stop()

	var jobLines, lines int
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		lines++
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		for _, s := range []string{secretHeader, "hdr-s3cr3t", secretBody, secretQuery} {
			if strings.Contains(line, s) {
				t.Errorf("log line holds a secret or body (%q): %s", s, line)
			}
		}
		if _, ok := m["job"]; ok {
			jobLines++
			if o, _ := m["origin"].(string); o == "" {
				t.Errorf("log line about a job has no origin: %s", line)
			}
		}
	}
	if jobLines == 0 {
		t.Fatalf("no log line about a job among %d lines; the test checks nothing", lines)
	}
	t.Logf("%d log lines, %d about a job", lines, jobLines)
}
