package stack

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func authConfig() broker.AuthConfig {
	return broker.AuthConfig{
		Enabled:  true,
		Admin:    broker.Credentials{User: "admin", Password: "admin-pw"},
		Executor: broker.Credentials{User: "executor", Password: "executor-pw"},
		Runtime:  broker.Credentials{User: "runtime", Password: "runtime-pw"},
		Origins:  map[string]broker.Credentials{"o1": {User: "origin-o1", Password: "o1-pw"}},
	}
}

// TestPerRoleUsersFromConfig runs the whole pipeline with nats.auth enabled
// in config: every role connects as its own user, and fetches, get-result and
// /call via NATS work. An anonymous client is refused.
func TestPerRoleUsersFromConfig(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.NATS.Auth = authConfig() })
	c := testutil.DialWS(t, st.OriginWS())
	enq, res := c.Fetch("a1", st.TargetURL()+"/echo?x=1", nil)
	if res.Type != "result" || res.Status != 200 {
		t.Fatalf("fetch under auth: %+v", res)
	}
	c.SendJSON(map[string]any{"type": "get-result", "id": "g1", "job": enq.Job})
	if f := c.Read(); f.Type != "result" {
		t.Fatalf("get-result under auth: %+v", f)
	}
	resp, err := http.Post(st.OriginHTTP()+"/call/echo?via=nats", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ping" {
		t.Fatalf("/call via nats under auth: %d %s", resp.StatusCode, body)
	}
	// Readiness and the queue-depth gauge work with the origin's and the
	// executor's permissions.
	for path, want := range map[string]string{"/readyz": "ready", "/metrics": "pipeline_jobs_queue_depth"} {
		resp, err := http.Get(st.OriginHTTP() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s under auth: %d, want 200 with %q", path, resp.StatusCode, want)
		}
	}
	if nc, err := nats.Connect(st.NATSURL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted, want authorization violation")
	}
}

// TestRoleProcessWithoutAdminDoesNotProvision starts an executor-only stack
// with its own user and no admin credentials against an authenticated
// server: it must not try to manage streams (it would only time out) and
// must still work.
func TestRoleProcessWithoutAdminDoesNotProvision(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.NATS.Auth = authConfig(); c.Executor.Count = 0 })
	cfg := EphemeralConfig()
	cfg.NATS.Embedded, cfg.NATS.URL = false, st.NATSURL()
	cfg.Origin.Enabled, cfg.Runtime.Enabled, cfg.Target.Enabled = false, false, false
	cfg.NATS.Auth = broker.AuthConfig{Enabled: true, Executor: authConfig().Executor}
	cfg.Executor.Policy.Allow = []string{strings.TrimPrefix(st.TargetURL(), "http://")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ex, err := Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("executor-only stack under auth: %v", err)
	}
	defer ex.Shutdown(context.Background())
	c := testutil.DialWS(t, st.OriginWS())
	if _, res := c.Fetch("e1", st.TargetURL()+"/delay", nil); res.Type != "result" || res.Status != 200 {
		t.Fatalf("fetch through the separate executor: %+v", res)
	}
}
