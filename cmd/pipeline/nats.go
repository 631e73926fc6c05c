package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
)

// newNATSCmd returns `pipeline nats`: one embedded NATS server node with
// JetStream. With cluster settings (a cluster name and routes) three of them
// form a JetStream cluster; the other roles then connect with
// --nats URL1,URL2,URL3 and streams are created with 3 replicas.
//
// Its --config FILE is this project's YAML (the nats section, including
// nats.server_name and nats.cluster), not a nats-server .conf file: one file
// format for every pipeline command. A stock nats-server with an equivalent
// .conf works just as well (configs/cluster/README.md).
func newNATSCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Run one NATS server node with JetStream (three with cluster settings form a JetStream cluster)",
		Long: `nats runs one embedded NATS server with JetStream file storage. Given a
cluster name and routes it is one node of a JetStream cluster: start three
(configs/cluster/n1.yaml, n2.yaml, n3.yaml), then run the roles against all
of them with --nats URL1,URL2,URL3 and streams.replicas 3.

Settings come from the nats section of the config file (nats.host, port,
monitor_port, monitor_host, monitor_token, data_dir, sync_always,
server_name and nats.cluster), then
PIPELINE_NATS_* environment variables, then these flags. Nodes may start
in any order: a node serves clients at once, and JetStream becomes usable
once a majority of the nodes listed in the routes is up. On SIGTERM or
Ctrl-C a clustered node enters lame-duck mode (nats.cluster.lame_duck):
it hands its stream leaderships to other nodes and moves its clients off
before stopping, so rolling restarts do not stall the pipeline.

The monitor is the same as pipeline up's embedded server: on 127.0.0.1
unless nats.monitor_host says otherwise, and with nats.monitor_token (or
PIPELINE_NATS_MONITOR_TOKEN, which keeps it out of the file) every endpoint
but /healthz needs Authorization: Bearer <token>.`,
		Example: `  # a 3-node cluster on one host, one terminal each
  pipeline nats --config configs/cluster/n1.yaml
  pipeline nats --config configs/cluster/n2.yaml
  pipeline nats --config configs/cluster/n3.yaml
  pipeline up --config configs/cluster/pipeline.yaml --executors 2

  # the same node with flags only
  pipeline nats --name n1 --cluster-name pipeline --listen 127.0.0.1:4222 \
    --cluster-listen 127.0.0.1:6222 --monitor-port 8222 --data-dir ./data/n1 \
    --routes nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224

  # a single server, no cluster (what pipeline up --embedded-nats embeds)
  pipeline nats --listen 127.0.0.1:4222 --data-dir ./data`,
		Args: cobra.NoArgs,
	}
	var parseErrs []error
	f := &flagSet{fs: cmd.Flags()}
	d := defaults().NATS
	f.str("name", "server name, unique per node (required in a cluster)", func(c *config.Config) *string { return &c.NATS.ServerName })
	f.str("cluster-name", "cluster name, the same on every node (empty: no cluster)", func(c *config.Config) *string { return &c.NATS.Cluster.Name })
	f.custom("listen", net.JoinHostPort(d.Host, strconv.Itoa(d.Port)), "client listen HOST:PORT (port -1: a free port)", func(c *config.Config, v string) {
		host, port, err := splitHostPort(v)
		if err != nil {
			parseErrs = append(parseErrs, fmt.Errorf("--listen: %w", err))
			return
		}
		c.NATS.Host, c.NATS.Port = host, port
	})
	f.custom("cluster-listen", net.JoinHostPort(d.Cluster.Host, strconv.Itoa(d.Cluster.Port)), "route listen HOST:PORT for the other nodes (port -1: a free port)", func(c *config.Config, v string) {
		host, port, err := splitHostPort(v)
		if err != nil {
			parseErrs = append(parseErrs, fmt.Errorf("--cluster-listen: %w", err))
			return
		}
		c.NATS.Cluster.Host, c.NATS.Cluster.Port = host, port
	})
	f.custom("routes", "", "every node's route URL, comma-separated, this one included (nats-route://HOST:PORT,...)", func(c *config.Config, v string) {
		c.NATS.Cluster.Routes = splitList(v)
	})
	f.str("data-dir", "JetStream file store directory (one per node)", func(c *config.Config) *string { return &c.NATS.DataDir })
	f.integer("monitor-port", "HTTP monitoring port: /healthz /varz /jsz /routez (-1: free, -2: off)", func(c *config.Config) *int { return &c.NATS.MonitorPort })
	f.boolean("sync-always", "fsync every JetStream write before acknowledging (survives power loss; slower)", func(c *config.Config) *bool { return &c.NATS.SyncAlways })
	f.duration("lame-duck", "on SIGTERM, hand over leaderships and move clients off over this long (0: stop at once)", func(c *config.Config) *time.Duration { return &c.NATS.Cluster.LameDuck })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(*config.Config) {})
		if err != nil {
			return err
		}
		if len(parseErrs) > 0 {
			return fmt.Errorf("nats: %w", parseErrs[0])
		}
		scfg, err := c.NATS.ServerConfig(true)
		if err != nil {
			return err
		}
		scfg.Logger = log.With().Str("component", "nats").Logger()
		return runNATS(cmd.Context(), scfg, log)
	}
	return cmd
}

// runNATS runs the server until ctx is done, then stops it (lame duck for a
// cluster node).
func runNATS(ctx context.Context, scfg broker.ServerConfig, log zerolog.Logger) error {
	srv, err := broker.NewServer(scfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	ev := log.Info().Str("name", srv.Name()).Str("client", srv.ClientURL()).Str("store", scfg.StoreDir).Bool("sync_always", scfg.SyncAlways)
	if m := srv.MonitorAddr(); m != "" {
		ev = ev.Str("monitor", "http://"+m)
	}
	if c := scfg.Cluster; c != nil {
		ev = ev.Str("cluster", c.Name).Str("route_listen", srv.ClusterURL()).Strs("routes", c.Routes)
	}
	ev.Msg("NATS server listening")

	watchDone := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watchDone)
		watchJetStream(wctx, srv, scfg.Cluster != nil, log)
	}()
	<-ctx.Done()
	stopWatch()
	<-watchDone
	var lameDuck time.Duration
	if scfg.Cluster != nil {
		lameDuck = scfg.Cluster.LameDuck
	}
	// The lame-duck period, and then as long again for the store to close.
	sctx, cancel := context.WithTimeout(context.Background(), 2*lameDuck+15*time.Second)
	defer cancel()
	if lameDuck > 0 {
		log.Info().Dur("lame_duck", lameDuck).Msg("lame duck: handing over leaderships, moving clients to other nodes")
		err = srv.LameDuckShutdown(sctx)
	} else {
		err = srv.Shutdown(sctx)
	}
	if err != nil {
		return err
	}
	log.Info().Msg("NATS server stopped")
	return nil
}

// watchJetStream logs once when JetStream is usable (in a cluster: when a
// meta leader was elected), and warns while it is not, so an operator sees
// a node waiting for its peers.
func watchJetStream(ctx context.Context, srv *broker.Server, clustered bool, log zerolog.Logger) {
	ns := srv.NATS()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	lastWarn := start
	for {
		st := ns.Healthz(&server.HealthzOptions{JSEnabledOnly: !clustered, JSMetaOnly: clustered})
		if st.Status == "ok" {
			ev := log.Info()
			if clustered {
				if jsz, err := ns.Jsz(&server.JSzOptions{}); err == nil && jsz.Meta != nil {
					// Replicas are the other peers as this node sees them.
					peers := []string{srv.Name()}
					for _, r := range jsz.Meta.Replicas {
						if !slices.Contains(peers, r.Name) {
							peers = append(peers, r.Name)
						}
					}
					slices.Sort(peers)
					ev = ev.Str("meta_leader", jsz.Meta.Leader).Strs("peers", peers).Int("cluster_size", jsz.Meta.Size)
				}
			}
			ev.Str("after", time.Since(start).Round(time.Millisecond).String()).Msg("JetStream ready")
			return
		}
		if time.Since(lastWarn) >= 10*time.Second {
			lastWarn = time.Now()
			log.Warn().Str("status", st.Error).Msg("JetStream not ready yet: waiting for a majority of the cluster's nodes")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// duration adds a duration flag applied only when given.
func (f *flagSet) duration(name, usage string, field func(*config.Config) *time.Duration) {
	d := defaults()
	v := f.fs.Duration(name, *field(&d), usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			*field(c) = *v
		}
	})
}

// replicas adds --replicas (streams.replicas).
func (f *flagSet) replicas() {
	f.integer("replicas", "JetStream replicas per stream and consumer: 3 on a 3-node cluster (every role must use the same value)", func(c *config.Config) *int { return &c.Streams.Replicas })
}

// splitHostPort parses HOST:PORT; PORT may be -1 (a free port).
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", s)
	}
	return host, port, nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
