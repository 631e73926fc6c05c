package stack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
		Caller:   broker.Credentials{User: "caller", Password: "caller-pw"},
		Origins: map[string]broker.Credentials{
			"o1": {User: "origin-o1", Password: "o1-pw"},
			"o2": {User: "origin-o2", Password: "o2-pw"},
		},
	}
}

// TestPerRoleUsersFromConfig runs the whole pipeline with nats.auth enabled
// in config: every role connects as its own user, and fetches, get-result and
// /call via NATS work. An anonymous client is refused.
func TestPerRoleUsersFromConfig(t *testing.T) {
	st := startStack(t, func(c *config.Config) {
		c.NATS.Auth = authConfig()
		c.Executor.JobsKeeperInterval = 20 * time.Millisecond
	})
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
	// The executor's user may publish the jobs stream's keeper and delete
	// older ones (a keeper every 20 ms here), and the queue depth does not
	// count it (every job above has finished).
	admin, err := nats.Connect(st.NATSURL(), nats.UserInfo("admin", "admin-pw"), nats.CustomInboxPrefix(broker.InboxPrefix(broker.RoleAdmin, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	keeper := broker.Subjects{}.JobsKeeper()
	keepers := func() (n, last uint64) {
		jobs, err := js.Stream(context.Background(), broker.JobsStream)
		if err != nil {
			return 0, 0
		}
		info, err := jobs.Info(context.Background(), jetstream.WithSubjectFilter(keeper))
		if err != nil {
			return 0, 0
		}
		m, err := jobs.GetLastMsgForSubject(context.Background(), keeper)
		if err != nil {
			return 0, 0
		}
		return info.State.Subjects[keeper], m.Sequence
	}
	var first uint64
	testutil.Eventually(t, 10*time.Second, func() bool { _, first = keepers(); return first > 0 },
		"a keeper in the jobs stream, published with the executor's permissions")
	testutil.Eventually(t, 10*time.Second, func() bool { n, last := keepers(); return n == 1 && last > first },
		"one keeper, newer than the first: older ones deleted with the executor's permissions")
	testutil.WantMetric(t, st.metrics.Gatherer(), "pipeline_jobs_queue_depth", nil, 0)
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

// TestTwoOriginAccountsExactlyOnce runs two origins, each in its own NATS
// account (o2 in a second process-like stack that reaches the server over
// TCP), against the shared executors: every fetch of each origin's client
// gets exactly one final frame, and no frame of one origin's fetches reaches
// the other's client (the ledgers count strays).
func TestTwoOriginAccountsExactlyOnce(t *testing.T) {
	st := startStack(t, func(c *config.Config) { c.NATS.Auth = authConfig() })
	cfg := EphemeralConfig()
	cfg.NATS.Embedded, cfg.NATS.URL = false, st.NATSURL()
	cfg.Executor.Count, cfg.Runtime.Enabled, cfg.Target.Enabled = 0, false, false
	cfg.Origin.ID = "o2"
	cfg.NATS.Auth = broker.AuthConfig{Enabled: true, Origins: map[string]broker.Credentials{"o2": authConfig().Origins["o2"]}}
	o2 := startConfigured(t, cfg, zerolog.WarnLevel)

	const n = 100
	type side struct {
		id string
		l  *testutil.Ledger
		lc *testutil.LedgerConn
	}
	sides := []side{{id: "o1", l: testutil.NewLedger()}, {id: "o2", l: testutil.NewLedger()}}
	sides[0].lc = testutil.DialLedger(t, st.OriginWS(), sides[0].l)
	sides[1].lc = testutil.DialLedger(t, o2.OriginWS(), sides[1].l)
	for i := 0; i < n; i++ {
		for _, sd := range sides {
			id := fmt.Sprintf("%s-%d", sd.id, i)
			if err := sd.lc.StartFetch(id, st.TargetURL()+"/echo?from="+id, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, sd := range sides {
		if !sd.l.WaitDone(30 * time.Second) {
			t.Fatalf("%s: %d fetches unfinished", sd.id, sd.l.Pending())
		}
		// Duplicates or strays would arrive late: give them a moment.
		time.Sleep(200 * time.Millisecond)
		sum := sd.l.Check(t)
		if sum.Results != n {
			t.Errorf("%s: %d results, want %d (%+v)", sd.id, sum.Results, n, sum)
		}
	}
}
