package stack

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// testCluster is a 3-node NATS JetStream cluster of embedded servers on free
// 127.0.0.1 ports, each with its own store in t.TempDir().
type testCluster struct {
	t       *testing.T
	mu      sync.Mutex
	servers map[string]*broker.Server // by server name; removed when stopped
	urls    []string                  // client URLs of every node, in start order
}

// startClusterAuth starts n nodes concurrently (a meta leader needs a
// quorum, so a node started alone would wait for the others), with auth's
// accounts and users on every node (auth disabled: none), and stops them at
// test end.
func startClusterAuth(t *testing.T, n int, auth broker.AuthConfig) *testCluster {
	t.Helper()
	ports := testutil.FreePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &testCluster{t: t, servers: make(map[string]*broker.Server)}
	type started struct {
		i   int
		srv *broker.Server
		err error
	}
	ch := make(chan started, n)
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		// Each node parses its own accounts: an account belongs to one server.
		users, accounts, err := auth.ServerAccounts(broker.Subjects{})
		if err != nil {
			t.Fatal(err)
		}
		go func(i int) {
			srv, err := startServer(broker.ServerConfig{
				Users:        users,
				Accounts:     accounts,
				Port:         -1,
				MonitorPort:  -2,
				StoreDir:     dir,
				ServerName:   fmt.Sprintf("n%d", i+1),
				ReadyTimeout: 20 * time.Second,
				Cluster: &broker.ClusterConfig{
					Name:   "test",
					Host:   "127.0.0.1",
					Port:   ports[i],
					Routes: routes,
				},
			})
			ch <- started{i, srv, err}
		}(i)
	}
	urls := make([]string, n)
	var errs []error
	for k := 0; k < n; k++ {
		s := <-ch
		if s.err != nil {
			errs = append(errs, s.err)
			continue
		}
		c.servers[s.srv.Name()] = s.srv
		urls[s.i] = s.srv.ClientURL()
	}
	c.urls = urls
	t.Cleanup(c.stopAll)
	if len(errs) > 0 {
		t.Fatalf("start cluster: %v", errs)
	}
	return c
}

// URL is every node's client URL, comma-separated (what --nats takes).
func (c *testCluster) URL() string { return strings.Join(c.urls, ",") }

// stop shuts one node down abruptly (no lame duck): to the others it is a
// lost server.
func (c *testCluster) stop(name string) {
	c.mu.Lock()
	srv := c.servers[name]
	delete(c.servers, name)
	c.mu.Unlock()
	if srv == nil {
		c.t.Fatalf("no running server %q", name)
	}
	_ = srv.Shutdown(context.Background())
}

func (c *testCluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, srv := range c.servers {
		_ = srv.Shutdown(context.Background())
		delete(c.servers, name)
	}
}

// clusterConfig is a stack against cluster c: no embedded server, R3
// streams, and a short AckWait so that a job whose delivery died with a
// server comes back in seconds, not 30 s.
func clusterConfig(c *testCluster) config.Config {
	cfg := EphemeralConfig()
	cfg.NATS.Embedded = false
	cfg.NATS.URL = c.URL()
	cfg.Streams.Replicas = 3
	cfg.Streams.AckWait = 2 * time.Second
	return cfg
}

// startClusterStack starts the roles cfg enables and stops them at test end
// (before the cluster, whose cleanup was registered first).
func startClusterStack(t *testing.T, cfg config.Config) *Stack {
	t.Helper()
	st := startConfigured(t, cfg, zerolog.ErrorLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The origin's results consumers have a fixed 30 s AckWait; shorten it
	// the same way, so a result whose delivery died with a server is
	// redelivered (and de-duplicated) within the test's time.
	if st.Origin() != nil && !cfg.NATS.Auth.Enabled { // with auth the admin provisioned them so
		js := clusterJS(t, cfg.NATS.URL)
		for _, name := range []string{broker.OriginConsumer(cfg.Origin.ID), broker.OriginBulkConsumer(cfg.Origin.ID)} {
			cons, err := js.Consumer(ctx, broker.ResultsStream, name)
			if err != nil {
				t.Fatal(err)
			}
			cc := cons.CachedInfo().Config
			cc.AckWait = cfg.Streams.AckWait
			if _, err := js.UpdateConsumer(ctx, broker.ResultsStream, cc); err != nil {
				t.Fatalf("shorten results AckWait of %s: %v", name, err)
			}
		}
	}
	return st
}

// clusterJS is a JetStream context on its own connection to url, closed at
// test end.
func clusterJS(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamLeader is the name of the server leading stream name.
func streamLeader(ctx context.Context, js jetstream.JetStream, name string) (string, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s info: %w", name, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s: no leader", name)
	}
	if info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
		return "", fmt.Errorf("stream %s: %d replicas configured, %d peers besides the leader; want 3 and 2",
			name, info.Config.Replicas, len(info.Cluster.Replicas))
	}
	return info.Cluster.Leader, nil
}

// consumerLeader is the name of the server leading consumer cons of stream.
func consumerLeader(ctx context.Context, js jetstream.JetStream, stream, cons string) string {
	c, err := js.Consumer(ctx, stream, cons)
	if err != nil {
		return "?"
	}
	info, err := c.Info(ctx)
	if err != nil || info.Cluster == nil {
		return "?"
	}
	return info.Cluster.Leader
}

// startDelayed sends a start-fetch for the test target's /delay?ms=delayMS
// on lc and records in its ledger the body the result must carry.
func startDelayed(lc *testutil.LedgerConn, id, targetURL string, delayMS int) error {
	return lc.StartFetch(id, fmt.Sprintf("%s/delay?ms=%d", targetURL, delayMS), fmt.Sprintf("delayed %d ms\n", delayMS))
}

// moveLeader asks the leader of a stream (consumer == "") or consumer to
// step down in favour of server name, until name leads it.
func moveLeader(ctx context.Context, t *testing.T, nc *nats.Conn, js jetstream.JetStream, stream, consumer, name string) {
	t.Helper()
	subj := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	leader := func() string { return must(streamLeader(ctx, js, stream)) }
	if consumer != "" {
		subj = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
		leader = func() string { return consumerLeader(ctx, js, stream, consumer) }
	}
	req := []byte(`{"placement":{"preferred":"` + name + `"}}`)
	for i := 0; leader() != name; i++ {
		if i == 50 {
			t.Fatalf("%s %s: leader is %s, could not move it to %s", stream, consumer, leader(), name)
		}
		if _, err := nc.RequestWithContext(ctx, subj, req); err != nil {
			t.Logf("stepdown %s %s: %v", stream, consumer, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeLoss is the outcome of runNodeLoss.
type nodeLoss struct {
	sum        testutil.Summary
	recovery   time.Duration // loss → every fetch of the first batch ended
	resumed    time.Duration // loss → every executor took a job again
	continued  int64         // continuations the origin ran
	duplicates int64         // duplicate results it suppressed
}

// runNodeLoss runs the pipeline (origin, two executors) against a 3-node
// cluster with R3 streams, sends a steady load of 400 fetches over 4 s from
// four WebSocket clients, and 1.2 s in shuts down the node leading the jobs
// stream (with allLeaders, first every stream and consumer leadership is
// moved to that node: the worst case). After the first batch has ended it
// sends small batches until both executors have taken jobs again. It
// asserts the exactly-once contract and that both executors and the jobs
// stream recover.
//
// With auth, every node has the accounts of nats.auth (each origin in its
// own account) and every role connects as its own user.
func runNodeLoss(t *testing.T, allLeaders, auth bool) nodeLoss {
	var ac broker.AuthConfig
	var admin []nats.Option
	if auth {
		ac = authConfig()
		admin = append(admin, nats.UserInfo(ac.Admin.User, ac.Admin.Password), nats.CustomInboxPrefix(broker.InboxPrefix(broker.RoleAdmin, "")))
	}
	cl := startClusterAuth(t, 3, ac)
	cfg := clusterConfig(cl)
	cfg.NATS.Auth = ac
	cfg.Executor.Count = 2
	cfg.Executor.Concurrency = 32
	st := startClusterStack(t, cfg)
	js := clusterJS(t, cl.URL(), admin...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	victim, err := streamLeader(ctx, js, broker.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if allLeaders {
		nc := js.Conn()
		moveLeader(ctx, t, nc, js, broker.ResultsStream, "", victim)
		moveLeader(ctx, t, nc, js, broker.JobsStream, broker.JobsConsumer(cfg.Origin.ID), victim)
		moveLeader(ctx, t, nc, js, broker.ResultsStream, broker.OriginConsumer(cfg.Origin.ID), victim)
	}

	l := testutil.NewLedger()
	const conns, perConn, every = 4, 100, 40 * time.Millisecond // 100 fetches/s for 4 s
	var lcs []*testutil.LedgerConn
	for i := 0; i < conns; i++ {
		lcs = append(lcs, testutil.DialLedger(t, st.OriginWS(), l))
	}
	sendErr := make(chan error, conns)
	var wg sync.WaitGroup
	for i, lc := range lcs {
		wg.Add(1)
		go func(i int, lc *testutil.LedgerConn) {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for k := 0; k < perConn; k++ {
				delay := 14
				if k%5 == 0 {
					delay = 250 // some fetches are long, so many are in flight at the loss
				}
				if err := startDelayed(lc, fmt.Sprintf("a%d-%d", i, k), st.TargetURL(), delay); err != nil {
					sendErr <- err
					return
				}
				<-tick.C
			}
		}(i, lc)
	}

	time.Sleep(1200 * time.Millisecond)
	leader, err := streamLeader(ctx, js, broker.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shutting down %s, leader of %s (leaders: %s %s, consumer %s %s, consumer %s %s)", leader, broker.JobsStream,
		broker.ResultsStream, must(streamLeader(ctx, js, broker.ResultsStream)),
		broker.JobsConsumer(cfg.Origin.ID), consumerLeader(ctx, js, broker.JobsStream, broker.JobsConsumer(cfg.Origin.ID)),
		broker.OriginConsumer(cfg.Origin.ID), consumerLeader(ctx, js, broker.ResultsStream, broker.OriginConsumer(cfg.Origin.ID)))
	killed := time.Now()
	cl.stop(leader)
	wg.Wait()
	close(sendErr)
	for err := range sendErr {
		t.Fatalf("send: %v", err)
	}
	// Generous: a consumer whose leader died is noticed by clients connected
	// to other nodes only after two missed heartbeats (see
	// TestClusterNodeLossStrict).
	if !l.WaitDone(60 * time.Second) {
		t.Errorf("%d fetches still without a final frame %v after the loss", l.Pending(), time.Since(killed).Round(time.Millisecond))
	}
	out := nodeLoss{recovery: time.Since(killed)}
	if newLeader, err := streamLeader(ctx, js, broker.JobsStream); err != nil || newLeader == leader {
		t.Errorf("jobs stream after losing %s: leader %q, %v", leader, newLeader, err)
	}

	// Both executors consume again: small batches are sent until each
	// executor has taken some of them. A consumer whose leader died is
	// noticed by a client connected to another node only after two missed
	// pull heartbeats, so this can take up to 30 s (TestClusterNodeLossStrict).
	for k := 0; ; k++ {
		for i := 0; i < 20; i++ {
			if err := startDelayed(lcs[i%conns], fmt.Sprintf("b%d-%d", k, i), st.TargetURL(), 50); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		after := l.ByExecutor("b")
		all := true
		for _, ex := range st.Executors() {
			all = all && after[ex.ID()] > 0
		}
		if all {
			break
		}
		if time.Since(killed) > 45*time.Second {
			t.Fatalf("not every executor took a job 45 s after the loss: results by executor %v", after)
		}
	}
	out.resumed = time.Since(killed)
	if !l.WaitDone(30 * time.Second) {
		t.Errorf("after the loss: %d fetches without a final frame", l.Pending())
	}
	out.sum = l.Check(t)
	ost := st.Origin().Stats()
	out.continued, out.duplicates = ost.Finished, ost.Duplicates
	t.Logf("fetches %d: enqueued %d, results %d, errors after enqueued %d, rejected before enqueued %d %v; first batch done %v and every executor working %v after the loss; origin ran %d continuations, suppressed %d duplicate results",
		out.sum.Sent, out.sum.Enqueued, out.sum.Results, out.sum.ErrorsAfterEnqueued, out.sum.Refused, out.sum.Outcomes,
		out.recovery.Round(time.Millisecond), out.resumed.Round(time.Millisecond), out.continued, out.duplicates)
	if out.sum.Results < out.sum.Sent*9/10 {
		t.Errorf("only %d of %d fetches got a result", out.sum.Results, out.sum.Sent)
	}

	// Nothing is left behind in the jobs stream: every job was acked.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := testutil.JobsStored(ctx, js, broker.Subjects{}); err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("jobs stream not drained 10 s after the load")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// TestClusterSurvivesLosingStreamLeader: the node leading the jobs stream
// dies mid-load; every fetch still ends exactly once. It runs with nats.auth
// on (each origin in its own account, every role as its own user), as a
// deployment against an external cluster would; TestClusterNodeLossStrict
// covers the same loss without auth.
func TestClusterSurvivesLosingStreamLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test: skipped with -short")
	}
	runNodeLoss(t, false, true)
}

// TestClusterNodeLossWithAccounts is the worst case of
// TestClusterNodeLossStrict (the lost node led every stream and consumer,
// the origin's cross-account results consumer included) with nats.auth on:
// every node carries the accounts (the origin alone in its own, with its R3
// delayed-jobs stream there). Exactly once still holds, and the
// pipeline resumes within seconds.
func TestClusterNodeLossWithAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test: skipped with -short")
	}
	r := runNodeLoss(t, true, true)
	if r.recovery > 10*time.Second || r.resumed > 10*time.Second {
		t.Errorf("first batch ended %v and executors pulled again %v after the loss, want < 10 s",
			r.recovery.Round(time.Millisecond), r.resumed.Round(time.Millisecond))
	}
}

// TestClusterNodeLossStrict is the worst case (the lost node led every
// stream and consumer) with stricter expectations than the protocol's
// exactly-once frames: the pipeline resumes within seconds, and no fetch is
// both rejected to the client and executed (a rejection must mean the job
// was not stored: a PubAck lost in a reconnect is re-checked by publishing
// again with the same Nats-Msg-Id).
func TestClusterNodeLossStrict(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test: skipped with -short")
	}
	r := runNodeLoss(t, true, false)
	if r.recovery > 10*time.Second || r.resumed > 10*time.Second {
		t.Errorf("first batch ended %v and executors pulled again %v after the loss, want < 10 s",
			r.recovery.Round(time.Millisecond), r.resumed.Round(time.Millisecond))
	}
	if extra := r.continued - int64(r.sum.Results); extra != 0 {
		t.Errorf("%d jobs ran although their client was told the fetch failed", extra)
	}
}

// must returns s, or a marker with err for log lines.
func must(s string, err error) string {
	if err != nil {
		return "?(" + err.Error() + ")"
	}
	return s
}

// TestClusterKeysDelayCancel runs the client-named job features on an R3
// cluster: asking about an unknown key (a probe of the jobs stream's
// de-duplication that must store nothing) leaves the key free, a key
// stores one job, a delayed job runs after its delay, and a delayed job
// can be canceled.
func TestClusterKeysDelayCancel(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	c := startClusterAuth(t, 3, broker.AuthConfig{})
	st := startClusterStack(t, clusterConfig(c))
	ws := testutil.DialWS(t, st.OriginWS())
	ws.SendJSON(map[string]any{"type": "get-result", "id": "g", "key": "fresh"})
	if f := ws.Read(); f.Type != "error" || f.Code != "not_found" {
		t.Fatalf("unknown key: %+v", f)
	}
	enq, final := ws.Fetch("a", st.TargetURL()+"/echo", map[string]any{"key": "fresh"})
	if enq.Duplicate || final.Type != "result" {
		t.Fatalf("key after a probe: enqueued %+v final %+v", enq, final)
	}
	enq2, final2 := ws.Fetch("b", st.TargetURL()+"/echo", map[string]any{"key": "fresh"})
	if !enq2.Duplicate || enq2.Job != enq.Job || final2.Body != final.Body {
		t.Fatalf("second use of the key: enqueued %+v final %+v", enq2, final2)
	}
	sent := time.Now()
	enq3, final3 := ws.Fetch("d", st.TargetURL()+"/echo", map[string]any{"delay_ms": 1000})
	if final3.Type != "result" || time.Since(sent) < time.Second || enq3.Job == "" {
		t.Fatalf("delayed fetch: %+v after %v", final3, time.Since(sent))
	}
	ws.SendJSON(map[string]any{"type": "start-fetch", "id": "x", "delay_ms": 60_000, "url": st.TargetURL() + "/echo"})
	enq4 := ws.Read()
	ws.SendJSON(map[string]any{"type": "cancel", "id": "c", "job": enq4.Job})
	if f := ws.Read(); f.Type != "canceled" {
		t.Fatalf("cancel: %+v", f)
	}
	if f := ws.Read(); f.Type != "error" || f.Code != "canceled" || f.ID != "x" {
		t.Fatalf("canceled final frame: %+v", f)
	}
}
