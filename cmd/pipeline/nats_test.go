package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestShippedClusterConfigs checks configs/cluster/: three nodes with
// distinct names, ports and stores whose routes list every node, and a
// roles file that reaches all three with 3 replicas.
func TestShippedClusterConfigs(t *testing.T) {
	dir := filepath.Join("..", "..", "configs", "cluster")
	var clientURLs, routeURLs []string
	names, stores := map[string]bool{}, map[string]bool{}
	for i := 1; i <= 3; i++ {
		c, err := config.Load(filepath.Join(dir, fmt.Sprintf("n%d.yaml", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		scfg, err := c.NATS.ServerConfig(true)
		if err != nil {
			t.Fatalf("n%d: %v", i, err)
		}
		if scfg.Cluster == nil || scfg.Cluster.Name != "pipeline" || len(scfg.Cluster.Routes) != 3 {
			t.Fatalf("n%d: cluster %+v, want cluster pipeline with 3 routes", i, scfg.Cluster)
		}
		if names[scfg.ServerName] || stores[scfg.StoreDir] {
			t.Errorf("n%d: server name %q or store %q used twice", i, scfg.ServerName, scfg.StoreDir)
		}
		names[scfg.ServerName], stores[scfg.StoreDir] = true, true
		clientURLs = append(clientURLs, fmt.Sprintf("nats://%s:%d", scfg.Host, scfg.Port))
		routeURLs = append(routeURLs, fmt.Sprintf("nats-route://%s:%d", scfg.Cluster.Host, scfg.Cluster.Port))
		if i == 3 {
			for _, r := range routeURLs {
				if !slices.Contains(scfg.Cluster.Routes, r) {
					t.Errorf("routes %v miss %s", scfg.Cluster.Routes, r)
				}
			}
		}
	}
	roles, err := config.Load(filepath.Join(dir, "pipeline.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(roles.NATS.URL, ","); !slices.Equal(got, clientURLs) {
		t.Errorf("roles connect to %v, want %v", got, clientURLs)
	}
	if roles.Streams.Replicas != 3 || roles.NATS.Embedded {
		t.Errorf("roles: replicas %d embedded %v, want 3 and false", roles.Streams.Replicas, roles.NATS.Embedded)
	}
}

func TestNATSConfigErrors(t *testing.T) {
	base := config.Default().NATS
	cases := []struct {
		name string
		mod  func(*config.NATS)
		want string
	}{
		{"routes without cluster name", func(n *config.NATS) { n.Cluster.Routes = []string{"nats-route://127.0.0.1:6222"} }, "without a cluster name"},
		{"cluster without server name", func(n *config.NATS) {
			n.Cluster.Name, n.Cluster.Routes = "c", []string{"nats-route://127.0.0.1:6222"}
		}, "unique server name"},
		{"cluster without routes", func(n *config.NATS) { n.Cluster.Name, n.ServerName = "c", "n1" }, "list every node"},
		{"route without scheme", func(n *config.NATS) {
			n.Cluster.Name, n.ServerName, n.Cluster.Routes = "c", "n1", []string{"127.0.0.1:6222"}
		}, "want nats-route://"},
		{"no data dir", func(n *config.NATS) { n.DataDir = "" }, "data dir"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := base
			tc.mod(&n)
			if _, err := n.ServerConfig(true); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, _, err := splitHostPort("127.0.0.1:x"); err == nil {
		t.Error("splitHostPort accepted a non-numeric port")
	}
}

// TestNATSCommandFormsCluster runs three `pipeline nats` commands (one from
// a config file, two from flags), creates an R3 stream on the cluster they
// form, and stops them (one in lame-duck mode) by cancelling their context.
func TestNATSCommandFormsCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster: skipped with -short")
	}
	ports := testutil.FreePorts(t, 6)
	client, route := ports[:3], ports[3:]
	var routes []string
	for _, p := range route {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}
	file := filepath.Join(t.TempDir(), "n1.yaml")
	yaml := fmt.Sprintf(`nats:
  server_name: n1
  port: %d
  monitor_port: -2
  data_dir: %s
  cluster:
    name: t
    port: %d
    routes: [%s]
    lame_duck: 2s
`, client[0], filepath.Join(t.TempDir(), "n1"), route[0], strings.Join(routes, ", "))
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := [][]string{{"nats", "--config", file}}
	for i := 1; i < 3; i++ {
		args = append(args, []string{"nats", "--name", fmt.Sprintf("n%d", i+1), "--cluster-name", "t",
			"--listen", fmt.Sprintf("127.0.0.1:%d", client[i]), "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", route[i]),
			"--routes", strings.Join(routes, ","), "--data-dir", t.TempDir(), "--monitor-port", "-2", "--lame-duck", "0"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, len(args))
	for _, a := range args {
		root := newRootCmd(nil)
		root.SetArgs(append(a, "--log-level", "fatal"))
		go func() { done <- root.ExecuteContext(ctx) }()
	}

	var urls []string
	for _, p := range client {
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The meta leader needs a majority of the nodes: retry until it exists.
	deadline := time.Now().Add(30 * time.Second)
	var info *jetstream.StreamInfo
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		if err == nil {
			info, err = s.Info(sctx)
		}
		scancel()
		if err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no R3 stream on the cluster after 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("hi")); err != nil {
		t.Fatalf("publish to the R3 stream: %v", err)
	}
	cancel()
	waitStopped(t, done, len(args))
}

// waitStopped waits for n `pipeline nats` commands, whose context was
// cancelled, to return on done without an error of their own.
func waitStopped(t *testing.T, done <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("pipeline nats returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("pipeline nats did not stop 20 s after its context ended")
		}
	}
}

// TestNATSCommandMonitorToken runs `pipeline nats --config FILE` with
// nats.monitor_token set in the file: the standalone node guards its
// monitor like the embedded server of `pipeline up` (one builder,
// config.NATS.ServerConfig): /healthz stays open, every other endpoint
// needs the bearer token, and the monitor listens on 127.0.0.1 by default.
func TestNATSCommandMonitorToken(t *testing.T) {
	ports := testutil.FreePorts(t, 2)
	file := filepath.Join(t.TempDir(), "node.yaml")
	yaml := fmt.Sprintf(`nats:
  port: %d
  monitor_port: %d
  monitor_token: mon-s3cret
  data_dir: %s
`, ports[0], ports[1], filepath.Join(t.TempDir(), "data"))
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd(nil)
	root.SetArgs([]string{"nats", "--config", file, "--log-level", "fatal"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	base := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	get := func(path, token string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if !testutil.WaitFor(20*time.Second, func() bool { return get("/healthz", "") == http.StatusOK }) {
		select {
		case err := <-done:
			t.Fatalf("pipeline nats exited: %v", err)
		default:
		}
		t.Fatal("the node's monitor did not answer /healthz within 20 s")
	}
	cases := []struct {
		path, token string
		want        int
	}{
		{"/varz", "", http.StatusUnauthorized},
		{"/connz", "wrong", http.StatusUnauthorized},
		{"/jsz", "", http.StatusUnauthorized},
		{"/varz", "mon-s3cret", http.StatusOK},
		{"/accountz", "mon-s3cret", http.StatusOK},
	}
	for _, c := range cases {
		if got := get(c.path, c.token); got != c.want {
			t.Errorf("GET %s with token %q: got HTTP %d, want %d", c.path, c.token, got, c.want)
		}
	}
	cancel()
	waitStopped(t, done, 1)
}
