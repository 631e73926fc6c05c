package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pipeline-dev/pipeline/configs"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/internal/stack"
)

// options are the flags shared by every server subcommand.
type options struct {
	environ      []string
	configFile   string
	logLevel     string
	logFormat    string
	drainTimeout time.Duration
}

func newRootCmd(environ []string) *cobra.Command {
	o := &options{environ: environ}
	root := &cobra.Command{
		Use:   "pipeline",
		Short: "Message-broker-backed asynchronous fetch and RPC pipeline on NATS JetStream",
		Long: `pipeline runs origins (WebSocket sessions that enqueue fetch jobs), executors
(which perform the fetches), the runtime RPC service and a test target, with
NATS JetStream in between.

Settings come from, lowest to highest precedence: built-in defaults
(pipeline config prints them), the --config file, PIPELINE_<SECTION>_<KEY>
environment variables (e.g. PIPELINE_EXECUTOR_CONCURRENCY=512,
PIPELINE_LOG_LEVEL=debug, PIPELINE_NATS_URL=nats://n1:4222,nats://n2:4222;
nested keys join with _, lists are comma-separated), and flags.

Logs are JSON lines on stderr, or a readable console format on a terminal
(--log-format, --log-level). Every server role answers /healthz (alive) and
/readyz (NATS connected, streams reachable) and exports Prometheus /metrics:
the origin next to /ws, with a live dashboard at /; the runtime next to
/rpc/<fn>; a lone executor process on --ops-listen (default 127.0.0.1:9091).`,
		Example: `  # everything in one process, embedded NATS
  pipeline up --embedded-nats

  # add capacity from another terminal or machine
  pipeline executor --nats nats://127.0.0.1:4222

  # a second origin with its own results subject
  pipeline origin --nats nats://127.0.0.1:4222 --origin-id o2 --listen 127.0.0.1:8081`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.configFile, "config", "", "config file (YAML); see `pipeline config` for every setting")
	pf.StringVar(&o.logLevel, "log-level", "", "log level: trace, debug, info, warn, error (default from config: info)")
	pf.StringVar(&o.logFormat, "log-format", "", "log format: auto, json, console (default from config: auto)")
	pf.DurationVar(&o.drainTimeout, "drain-timeout", 15*time.Second, "on SIGTERM/Ctrl-C, how long to wait for in-flight work")

	root.AddCommand(
		newUpCmd(o),
		newOriginCmd(o),
		newExecutorCmd(o),
		newRuntimeCmd(o),
		newTargetCmd(o),
		newNATSCmd(o),
		newDLQCmd(o),
		newConfigCmd(),
		newVersionCmd(),
	)
	return root
}

// flagSet maps a flag to the config field it overrides, applied only when the
// flag was given. A flag's default is read from config.Default() through the
// same field accessor, so it is never written twice.
type flagSet struct {
	fs    *pflag.FlagSet
	apply []func(*config.Config)
}

// defaults is what the flags show as their defaults.
func defaults() config.Config { return config.Default() }

func (f *flagSet) str(name, usage string, field func(*config.Config) *string) {
	d := defaults()
	v := f.fs.String(name, *field(&d), usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			*field(c) = *v
		}
	})
}

func (f *flagSet) integer(name, usage string, field func(*config.Config) *int) {
	d := defaults()
	v := f.fs.Int(name, *field(&d), usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			*field(c) = *v
		}
	})
}

// boolean adds a flag that sets a config switch to true when given (or to
// false with --name=false); its default is the switch's default.
func (f *flagSet) boolean(name, usage string, field func(*config.Config) *bool) {
	d := defaults()
	v := f.fs.Bool(name, *field(&d), usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			*field(c) = *v
		}
	})
}

// negated adds --no-X for a switch that is on by default.
func (f *flagSet) negated(name, usage string, field func(*config.Config) *bool) {
	v := f.fs.Bool(name, false, usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			*field(c) = !*v
		}
	})
}

// custom adds a string flag whose value is parsed by set (the default shown
// is def).
func (f *flagSet) custom(name, def, usage string, set func(*config.Config, string)) {
	v := f.fs.String(name, def, usage)
	f.apply = append(f.apply, func(c *config.Config) {
		if f.fs.Changed(name) {
			set(c, *v)
		}
	})
}

func (f *flagSet) natsURL() {
	f.custom("nats", defaults().NATS.URL, "NATS server URL(s), comma-separated for a cluster", func(c *config.Config, v string) {
		c.NATS.URL = v
		c.NATS.Embedded = false
	})
}

// load builds the effective config: defaults, file, environment, flags, the
// test target's allow-list entry; then roles adjusts which roles this
// process runs.
func (o *options) load(f *flagSet, roles func(*config.Config)) (config.Config, zerolog.Logger, error) {
	c, err := config.Load(o.configFile, o.environ)
	if err != nil {
		return c, zerolog.Nop(), err
	}
	for _, a := range f.apply {
		a(&c)
	}
	c.AllowTarget()
	roles(&c)
	if o.logLevel != "" {
		c.Log.Level = o.logLevel
	}
	if o.logFormat != "" {
		c.Log.Format = o.logFormat
	}
	log, err := logging.New(os.Stderr, c.Log.Level, c.Log.Format)
	if err != nil {
		return c, log, err
	}
	return c, log, nil
}

// run starts the stack and blocks until ctx is cancelled (a signal), then
// drains and stops it.
func (o *options) run(ctx context.Context, c config.Config, log zerolog.Logger) error {
	st, err := stack.Start(ctx, c, log)
	if err != nil {
		return err
	}
	log.Info().Msg("pipeline running; Ctrl-C to stop")
	var serveErr error
	if org := st.Origin(); org != nil {
		select {
		case <-ctx.Done():
		case serveErr = <-org.Err():
		}
	} else {
		<-ctx.Done()
	}
	log.Info().Dur("drain_timeout", o.drainTimeout).Msg("shutting down: draining in-flight work")
	sctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	if err := st.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown incomplete")
	}
	return serveErr
}

func newUpCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run NATS (embedded), origin, executors, runtime and test target in one process",
		Example: `  pipeline up --embedded-nats
  pipeline up --embedded-nats --data-dir /var/lib/pipeline --executors 4
  pipeline up --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 --executors 0`,
		Args: cobra.NoArgs,
	}
	f := &flagSet{fs: cmd.Flags()}
	f.boolean("embedded-nats", "run an embedded NATS server with JetStream", func(c *config.Config) *bool { return &c.NATS.Embedded })
	f.natsURL()
	f.replicas()
	f.str("data-dir", "JetStream file store directory (embedded server)", func(c *config.Config) *string { return &c.NATS.DataDir })
	f.integer("nats-port", "embedded NATS client port (-1: free port)", func(c *config.Config) *int { return &c.NATS.Port })
	f.integer("monitor-port", "embedded NATS monitoring port (-1: free, -2: off)", func(c *config.Config) *int { return &c.NATS.MonitorPort })
	f.boolean("sync-always", "fsync every JetStream write before acknowledging (survives power loss; slower)", func(c *config.Config) *bool { return &c.NATS.SyncAlways })
	f.integer("executors", "in-process executors (0: none, run `pipeline executor` processes)", func(c *config.Config) *int { return &c.Executor.Count })
	f.integer("concurrency", "fetches in flight per executor", func(c *config.Config) *int { return &c.Executor.Concurrency })
	f.str("origin-id", "origin id (names its results subject)", func(c *config.Config) *string { return &c.Origin.ID })
	f.str("listen", "origin listen address (WebSocket /ws, caller /call)", func(c *config.Config) *string { return &c.Origin.Listen })
	f.str("runtime-listen", "runtime HTTP listen address", func(c *config.Config) *string { return &c.Runtime.Listen })
	f.str("target-listen", "test target listen address", func(c *config.Config) *string { return &c.Target.Listen })
	f.negated("no-target", "do not run the test target", func(c *config.Config) *bool { return &c.Target.Enabled })
	f.negated("no-runtime", "do not run the runtime service", func(c *config.Config) *bool { return &c.Runtime.Enabled })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(*config.Config) {})
		if err != nil {
			return err
		}
		if !c.NATS.Embedded && !cmd.Flags().Changed("nats") && !o.natsFromConfig(c) {
			return fmt.Errorf("up: say where NATS is: --embedded-nats, or --nats URL")
		}
		return o.run(cmd.Context(), c, log)
	}
	return cmd
}

// natsFromConfig reports whether the config file or environment chose a NATS
// URL explicitly.
func (o *options) natsFromConfig(c config.Config) bool {
	return c.NATS.URL != defaults().NATS.URL
}

func onlyRole(c *config.Config) {
	c.NATS.Embedded = false
	c.Origin.Enabled = false
	c.Executor.Count = 0
	c.Runtime.Enabled = false
	c.Target.Enabled = false
}

func newOriginCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "origin",
		Short:   "Run one origin: WebSocket sessions, job enqueueing, result continuations, /call",
		Example: `  pipeline origin --nats nats://127.0.0.1:4222 --origin-id o2 --listen 127.0.0.1:8081`,
		Args:    cobra.NoArgs,
	}
	f := &flagSet{fs: cmd.Flags()}
	f.natsURL()
	f.replicas()
	f.str("origin-id", "origin id (names its results subject; reuse it after a restart)", func(c *config.Config) *string { return &c.Origin.ID })
	f.str("listen", "listen address", func(c *config.Config) *string { return &c.Origin.Listen })
	f.custom("runtime-http", "http://"+defaults().Runtime.Listen, "runtime HTTP base URL for /call?via=http", func(c *config.Config, v string) { c.Runtime.Listen = strings.TrimPrefix(v, "http://") })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(c *config.Config) { onlyRole(c); c.Origin.Enabled = true })
		if err != nil {
			return err
		}
		return o.run(cmd.Context(), c, log)
	}
	return cmd
}

func newExecutorCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "executor",
		Short: "Run one executor process: pulls every origin's jobs (fair share) and fetches them",
		Example: `  pipeline executor --nats nats://127.0.0.1:4222
  pipeline executor --nats nats://n1:4222,nats://n2:4222 --concurrency 512`,
		Args: cobra.NoArgs,
	}
	f := &flagSet{fs: cmd.Flags()}
	f.natsURL()
	f.replicas()
	f.integer("concurrency", "fetches in flight", func(c *config.Config) *int { return &c.Executor.Concurrency })
	f.str("id", "executor id in results and logs (default host-random)", func(c *config.Config) *string { return &c.Executor.ID })
	f.str("ops-listen", "address of /metrics, /healthz and /readyz (\"\": none)", func(c *config.Config) *string { return &c.Executor.OpsListen })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(c *config.Config) { onlyRole(c); c.Executor.Count = 1 })
		if err != nil {
			return err
		}
		return o.run(cmd.Context(), c, log)
	}
	return cmd
}

func newRuntimeCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "runtime",
		Short:   "Run the runtime micro service (echo, transform, compute) over NATS and HTTP",
		Example: `  pipeline runtime --nats nats://127.0.0.1:4222 --listen 127.0.0.1:8789`,
		Args:    cobra.NoArgs,
	}
	f := &flagSet{fs: cmd.Flags()}
	f.natsURL()
	f.replicas()
	f.str("listen", "HTTP listen address (POST /rpc/<fn>)", func(c *config.Config) *string { return &c.Runtime.Listen })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(c *config.Config) { onlyRole(c); c.Runtime.Enabled = true })
		if err != nil {
			return err
		}
		return o.run(cmd.Context(), c, log)
	}
	return cmd
}

func newTargetCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "target",
		Short:   "Run the bundled HTTP test target alone (/echo /delay /bytes /status)",
		Example: `  pipeline target --listen 127.0.0.1:8090`,
		Args:    cobra.NoArgs,
	}
	f := &flagSet{fs: cmd.Flags()}
	f.str("listen", "listen address", func(c *config.Config) *string { return &c.Target.Listen })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := o.load(f, func(c *config.Config) { onlyRole(c); c.Target.Enabled = true })
		if err != nil {
			return err
		}
		return o.run(cmd.Context(), c, log)
	}
	return cmd
}

func newConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the default configuration file, documenting every setting",
		Example: `  pipeline config > pipeline.yaml
  pipeline up --embedded-nats --config pipeline.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(configs.Default())
			return err
		},
	}
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version (and the Go version it was built with)",
		Example: `  pipeline version`,
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok {
				fmt.Fprintf(cmd.OutOrStdout(), "pipeline %s (%s)\n", v, bi.GoVersion)
				return
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pipeline %s\n", v)
		},
	}
}
