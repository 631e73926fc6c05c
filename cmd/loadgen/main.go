// Command loadgen measures the pipeline the way its clients see it.
//
// Fetch mode (the default) opens WebSocket sessions to one or more origins,
// sends start-fetch frames closed loop (--concurrency) or open loop (--rate),
// and reports end-to-end latency percentiles, the pipeline's phases,
// throughput and errors by code as a table, JSON (--json) and a
// self-contained HTML page with plots (--html). `loadgen rpc` measures
// function delegation; see `loadgen rpc -h`.
//
// Run `loadgen -h` for the flags and examples.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/internal/stack"
	"github.com/pipeline-dev/pipeline/loadgen"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1   // the run could not be made (no origin, I/O error)
	exitUsage       = 2   // bad flags
	exitInterrupted = 130 // Ctrl-C: the partial report is still written
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args (without the program name) and returns
// the process exit code. Reports go to stdout; help, progress, diagnostics
// and errors go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var st exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &st):
		return int(st) // the command has said why
	default: // flags, arguments or their combination
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
		fmt.Fprintf(stderr, "run '%s -h' for usage\n", cmd.CommandPath())
		return exitUsage
	}
}

// exitStatus is returned by a command that has already reported its failure
// on stderr; it carries the exit code.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// status turns an exit code into a command's result.
func status(code int) error {
	if code == exitOK {
		return nil
	}
	return exitStatus(code)
}

// noArgs rejects positional arguments, which are most often a flag written
// with one dash too few or a value without its flag.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (flags start with --)", args[0])
	}
	return nil
}

const rootLong = `loadgen measures the pipeline from a client's point of view.

Fetch mode (this command) sends start-fetch frames over WebSocket (PROTOCOL.md §1)
and reports end-to-end latency percentiles, the pipeline's phases, throughput
and errors by code as a table, JSON (--json) and a self-contained HTML page with
plots (--html). loadgen rpc measures function delegation: direct, NATS, HTTP
(see loadgen rpc -h).

Load models:
  closed loop (default)  --concurrency fetches always in flight; each reply sends the next.
  open loop (--rate R)   R fetches per second on a fixed schedule, latency measured from
                         each fetch's intended send time (no coordinated omission);
                         --concurrency then caps fetches in flight (default max(100, R/10)).`

const rootExample = `  # one-command demo: start the whole pipeline in-process and load it
  loadgen --embedded --concurrency 100 --requests 20000 --html report.html

  # against 'pipeline up --embedded-nats' on this machine
  loadgen --concurrency 100

  # the original proxy-fetch study: bursts of 10, 100, 1000 concurrent 14 ms fetches
  loadgen --sweep 10,100,1000 --target-url /delay?ms=14

  # a measured client next to a noisy one: 600 fetches to a host that never
  # answers, and 200 fetches of a 14 ms target, 20 in flight, reported apart
  loadgen --concurrency 20 --requests 200 --target-url /delay?ms=14 \
          --noisy-target-url http://127.0.0.1:9/hang --noisy-concurrency 600 \
          --noisy-requests 600 --noisy-fetch-timeout 30s

  # 5000 fetches/s for 30 s over two origins, with a direct-fetch baseline
  loadgen --rate 5000 --duration 30s --origin ws://a:8080/ws --origin ws://b:8080/ws \
          --baseline --json result.json`

// newRootCmd returns the loadgen command: fetch mode, with `rpc` beneath it.
// Help goes to stderr with the other diagnostics, so that stdout carries
// only reports.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:           "loadgen",
		Short:         "Measure the pipeline from a client's point of view",
		Long:          rootLong,
		Example:       rootExample,
		Args:          noArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		// No completion command: loadgen had none, and `completion` would
		// write its script to stderr along with the help.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd.Flags()); err != nil {
				return err
			}
			return status(runFetch(cmd.Context(), o, stdout, stderr))
		},
	}
	o.register(root.Flags())
	root.SetOut(stderr)
	root.SetErr(stderr)
	root.AddCommand(newRPCCmd(stdout, stderr), newConnsCmd(stdout, stderr))
	return root
}

// options are the parsed command-line flags.
type options struct {
	origins        []string
	concurrency    int
	connections    int
	requests       int
	duration       time.Duration
	warmup         string
	rate           float64
	keyed          bool
	cpuPids        []int
	targetURL      string
	method         string
	headers        []string
	body           string
	fetchTimeout   time.Duration
	timeout        time.Duration
	dialTimeout    time.Duration
	sweep          string
	sweepRounds    int
	baseline       bool
	jsonPath       string
	htmlPath       string
	embedded       bool
	embeddedExecs  int
	quiet          bool
	noProgress     bool
	log            logFlags
	cpuProfile     string
	sweepLevels    []int
	warmupRequests int
	warmupDuration time.Duration
	warmupAuto     bool
	noisy          noisyOptions
}

// noisyOptions describe the second connection set (--noisy-*), run at the
// same time as the measured one and reported apart.
type noisyOptions struct {
	origins      []string
	targetURL    string
	concurrency  int
	requests     int
	fetchTimeout time.Duration
	wait         bool
}

func (n *noisyOptions) enabled() bool { return n.targetURL != "" }

// listFlag is a repeatable flag that also accepts comma-separated values.
type listFlag struct{ vals *[]string }

func (l listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.vals = append(*l.vals, p)
		}
	}
	return nil
}

// Type names the value in help when the usage string does not.
func (l listFlag) Type() string { return "list" }

// logFlags are the logging flags every loadgen command has.
type logFlags struct{ level, format string }

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "warn", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "auto", "log format: auto, json or console")
}

// jsonUsage is the help of --json, the same for every mode.
const jsonUsage = "write the JSON report (PROTOCOL.md §5) to `FILE`; - for stdout (replaces the table)"

// register defines the fetch-mode flags on fs, with their defaults.
func (o *options) register(fs *pflag.FlagSet) {
	fs.Var(listFlag{&o.origins}, "origin", "origin WebSocket `URL`, repeatable or comma-separated; load is spread round robin (default "+loadgen.DefaultOrigin+")")
	fs.IntVar(&o.concurrency, "concurrency", loadgen.DefaultConcurrency, "fetches in flight (closed loop), or the cap on fetches in flight (open loop)")
	fs.IntVar(&o.connections, "connections", 0, "WebSocket connections to spread the fetches over; 0 = one per 100 in flight, at least 4 and one per origin, at most 64 and --concurrency")
	fs.IntVar(&o.requests, "requests", loadgen.DefaultRequests, "measured fetches (per level with --sweep: default level × --sweep-rounds)")
	fs.DurationVar(&o.duration, "duration", 0, "measure for this long instead of a fixed --requests (with --rate: rate × duration fetches)")
	fs.StringVar(&o.warmup, "warmup", "auto", "unmeasured fetches first, drained before measuring: a count (500), a duration (2s), 0 for none, or auto = min(1000, max(requests/10, concurrency)) fetches, or min(1s, duration/10)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: fetches per `second` on a fixed schedule; 0 = closed loop")
	fs.IntSliceVar(&o.cpuPids, "cpu-pid", nil, "also report the CPU per fetch of these processes over the measured phase (e.g. pipeline up's pid; Linux /proc), repeatable")
	fs.BoolVar(&o.keyed, "keyed", false, "give every fetch its own idempotency key (start-fetch key), to measure what keys cost")
	fs.StringVar(&o.targetURL, "target-url", "", "`URL` the pipeline fetches; a value starting with / is relative to the test target (default "+loadgen.DefaultTargetURL+", or the embedded target)")
	fs.StringVar(&o.method, "method", loadgen.DefaultMethod, "HTTP method of the fetches")
	fs.Var(listFlag{&o.headers}, "header", "request header `Name: value` for the fetches, repeatable")
	fs.StringVar(&o.body, "body", "", "request body of the fetches")
	fs.DurationVar(&o.fetchTimeout, "fetch-timeout", 0, "sent as the fetch's timeout_ms; 0 = the origin's default")
	fs.DurationVar(&o.timeout, "timeout", loadgen.DefaultTimeout, "client-side deadline of one fetch; a fetch without reply by then counts as error code timeout")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", loadgen.DefaultDialTimeout, "deadline for a WebSocket handshake and the hello frame")
	fs.StringVar(&o.sweep, "sweep", "", "comma-separated concurrency `levels`, e.g. 10,100,1000: one run each, one table")
	fs.IntVar(&o.sweepRounds, "sweep-rounds", 1, "with --sweep and no --requests/--duration: fetches per slot per level (1 = one burst of `level` fetches, as in the original study)")
	fs.BoolVar(&o.baseline, "baseline", false, "also fetch the target directly (no pipeline) and report the latency the pipeline adds")
	fs.StringVar(&o.jsonPath, "json", "", jsonUsage)
	fs.StringVar(&o.htmlPath, "html", "", "write a self-contained HTML report with plots to `FILE`")
	fs.BoolVar(&o.embedded, "embedded", false, "start the whole pipeline (NATS, origin, executor, target) in-process on free ports and load it")
	fs.IntVar(&o.embeddedExecs, "embedded-executors", 0, "with --embedded: executor workers; 0 = the stack's default")
	fs.BoolVar(&o.quiet, "quiet", false, "do not print the table")
	fs.BoolVar(&o.noProgress, "no-progress", false, "no live progress line (it is shown only when stderr is a terminal)")
	o.log.register(fs)
	fs.StringVar(&o.noisy.targetURL, "noisy-target-url", "", "run a second connection set at the same time, fetching this `URL` (/... is relative to the test target), reported separately")
	fs.Var(listFlag{&o.noisy.origins}, "noisy-origin", "origin WebSocket `URL` of the second set (default: the first set's origins)")
	fs.IntVar(&o.noisy.concurrency, "noisy-concurrency", 100, "fetches in flight in the second set")
	fs.IntVar(&o.noisy.requests, "noisy-requests", 1000, "fetches of the second set")
	fs.DurationVar(&o.noisy.fetchTimeout, "noisy-fetch-timeout", 0, "timeout_ms of the second set's fetches; 0 = the origin's default")
	fs.BoolVar(&o.noisy.wait, "noisy-wait", false, "wait for the second set to finish; by default it is stopped (and reported partial) when the first set ends")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of loadgen (and, with --embedded, the pipeline) to `FILE`")
}

// validate checks flag combinations and derives the values that depend on
// several flags; fs is the flag set o was registered on, after parsing.
func (o *options) validate(fs *pflag.FlagSet) error {
	if o.embedded && len(o.origins) > 0 {
		return errors.New("--embedded starts its own origin; do not combine it with --origin")
	}
	if o.concurrency <= 0 {
		return fmt.Errorf("--concurrency %d: must be positive", o.concurrency)
	}
	if o.connections < 0 || o.requests < 0 || o.duration < 0 {
		return errors.New("--connections, --requests and --duration must not be negative")
	}
	if o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0) {
		return fmt.Errorf("--rate %v: must be a positive number", o.rate)
	}
	if o.rate > 0 && !fs.Changed("concurrency") {
		o.concurrency = max(loadgen.DefaultConcurrency, int(math.Ceil(o.rate/10)))
	}
	if o.duration > 0 && !fs.Changed("requests") {
		o.requests = 0
	}
	if o.sweep != "" {
		for _, p := range strings.Split(o.sweep, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n <= 0 {
				return fmt.Errorf("--sweep %q: want positive concurrency levels such as 10,100,1000", o.sweep)
			}
			o.sweepLevels = append(o.sweepLevels, n)
		}
		if !fs.Changed("requests") {
			o.requests = 0 // per level: level × rounds, unless --duration
		}
		if o.sweepRounds <= 0 {
			return fmt.Errorf("--sweep-rounds %d: must be positive", o.sweepRounds)
		}
	}
	switch w := strings.TrimSpace(o.warmup); {
	case w == "auto" || w == "":
		o.warmupAuto = true
	case strings.IndexFunc(w, func(r rune) bool { return r < '0' || r > '9' }) < 0:
		n, err := strconv.Atoi(w)
		if err != nil {
			return fmt.Errorf("--warmup %q: %w", w, err)
		}
		o.warmupRequests = n
	default:
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 {
			return fmt.Errorf("--warmup %q: want a count (500), a duration (2s), 0 or auto", w)
		}
		o.warmupDuration = d
	}
	for _, h := range o.headers {
		if k, _, ok := strings.Cut(h, ":"); !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("--header %q: want Name: value", h)
		}
	}
	if o.noisy.enabled() {
		if o.sweep != "" {
			return errors.New("--noisy-target-url cannot be combined with --sweep")
		}
		if o.noisy.concurrency <= 0 || o.noisy.requests <= 0 {
			return errors.New("--noisy-concurrency and --noisy-requests must be positive")
		}
		if o.embedded && len(o.noisy.origins) > 0 {
			return errors.New("--embedded starts its own origin; do not combine it with --noisy-origin")
		}
	} else if fs.Changed("noisy-origin") || fs.Changed("noisy-concurrency") || fs.Changed("noisy-requests") || fs.Changed("noisy-fetch-timeout") || fs.Changed("noisy-wait") {
		return errors.New("the --noisy-* flags need --noisy-target-url")
	}
	return nil
}

// targetFor resolves --target-url against the test target's base URL. Any
// other value is sent as given: even the pipeline's answer to a malformed
// URL is worth measuring.
func (o *options) targetFor(base string) string {
	switch t := o.targetURL; {
	case t == "":
		return base + loadgen.DefaultTargetPath
	case strings.HasPrefix(t, "/"):
		return base + t
	default:
		return t
	}
}

// warmupFor returns the warm-up of a run with the given concurrency and
// request count.
func (o *options) warmupFor(concurrency, requests int) (int, time.Duration) {
	if !o.warmupAuto {
		return o.warmupRequests, o.warmupDuration
	}
	if requests == 0 {
		return 0, min(time.Second, o.duration/10)
	}
	return min(1000, max(requests/10, concurrency)), 0
}

// runFetch is fetch mode with the options validated; it returns the process
// exit code after saying on stderr why it is not exitOK.
func runFetch(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	log, err := logging.New(stderr, o.log.level, o.log.format)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return exitUsage
	}

	if o.cpuProfile != "" {
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return exitFailed
		}
		defer stopProfile()
	}

	targetBase := loadgen.DefaultTargetBase
	if o.embedded {
		s, err := startEmbedded(ctx, o, log, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "loadgen: start embedded pipeline:", err)
			return exitFailed
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn().Err(err).Msg("embedded pipeline shutdown")
			}
		}()
		o.origins = []string{s.OriginWS()}
		targetBase = strings.TrimSuffix(s.TargetURL(), "/")
	}
	target := o.targetFor(targetBase)

	cfg := loadgen.Config{
		Origins:      o.origins,
		TargetURL:    target,
		Method:       o.method,
		Headers:      headerMap(o.headers),
		Body:         o.body,
		FetchTimeout: o.fetchTimeout,
		Keyed:        o.keyed,
		CPUPids:      o.cpuPids,
		Concurrency:  o.concurrency,
		Connections:  o.connections,
		Requests:     o.requests,
		Duration:     o.duration,
		Rate:         o.rate,
		Timeout:      o.timeout,
		DialTimeout:  o.dialTimeout,
		Baseline:     o.baseline,
		Logger:       log,
	}
	if f, ok := stderr.(*os.File); ok && !o.noProgress && isatty.IsTerminal(f.Fd()) {
		p := newProgressLine(stderr)
		cfg.Progress = p.update
	}

	var (
		result  reporter
		runErr  error
		heading string
	)
	if o.noisy.enabled() {
		cfg.WarmupRequests, cfg.WarmupDuration = o.warmupFor(o.concurrency, o.requests)
		var sr *loadgen.SetsReport
		sr, runErr = loadgen.RunSets(ctx, o.sets(cfg, targetBase))
		if sr != nil {
			result = sr
		}
		heading = "sets"
	} else if len(o.sweepLevels) > 0 {
		var sw *loadgen.SweepReport
		sw, runErr = loadgen.RunSweep(ctx, loadgen.SweepConfig{
			Base:   cfg,
			Levels: o.sweepLevels,
			Rounds: o.sweepRounds,
			Warmup: o.warmupFor,
		})
		if sw != nil && len(sw.Runs) > 0 {
			result = sw
		}
		heading = "sweep"
	} else {
		cfg.WarmupRequests, cfg.WarmupDuration = o.warmupFor(o.concurrency, o.requests)
		var rep *loadgen.Report
		rep, runErr = loadgen.Run(ctx, cfg)
		if rep != nil {
			result = rep
		}
		heading = "run"
	}

	code := exitOK
	switch {
	case runErr == nil:
	case errors.Is(runErr, loadgen.ErrNoOrigin):
		fmt.Fprintf(stderr, "loadgen: %v\n", runErr)
		fmt.Fprintln(stderr, "loadgen: is the pipeline running? start it with 'pipeline up --embedded-nats', or use 'loadgen --embedded'")
		code = exitFailed
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "loadgen: interrupted; the %s report below is partial\n", heading)
		code = exitInterrupted
	default:
		fmt.Fprintf(stderr, "loadgen: %v\n", runErr)
		code = exitFailed
	}
	if result == nil {
		return max(code, exitFailed)
	}
	if err := writeReports(result, o, stdout); err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return exitFailed
	}
	return code
}

// sets returns the measured set (cfg) and the noisy one, which has its own
// connections, target, concurrency, count and fetch timeout, no warm-up,
// and a client deadline long enough for its fetch timeout.
func (o *options) sets(cfg loadgen.Config, targetBase string) []loadgen.Set {
	n := cfg
	n.Progress = nil
	n.Baseline = false
	n.WarmupRequests, n.WarmupDuration = 0, 0
	n.Duration = 0
	n.Rate = 0
	n.Connections = 0
	if len(o.noisy.origins) > 0 {
		n.Origins = o.noisy.origins
	}
	n.TargetURL = (&options{targetURL: o.noisy.targetURL}).targetFor(targetBase)
	n.Concurrency, n.Requests = o.noisy.concurrency, o.noisy.requests
	n.FetchTimeout = o.noisy.fetchTimeout
	if min := o.noisy.fetchTimeout + 30*time.Second; n.Timeout < min {
		n.Timeout = min
	}
	return []loadgen.Set{
		{Name: "main", Config: cfg},
		{Name: "noisy", Config: n, StopWithFirst: !o.noisy.wait},
	}
}

// reporter is a run or sweep report.
type reporter interface {
	WriteText(io.Writer) error
	WriteJSON(io.Writer) error
	WriteHTML(io.Writer) error
}

func writeReports(r reporter, o *options, stdout io.Writer) error {
	if o.jsonPath == "-" {
		if err := r.WriteJSON(stdout); err != nil {
			return err
		}
	} else if !o.quiet {
		if err := r.WriteText(stdout); err != nil {
			return err
		}
	}
	if o.jsonPath != "" && o.jsonPath != "-" {
		if err := writeFile(o.jsonPath, r.WriteJSON); err != nil {
			return err
		}
	}
	if o.htmlPath != "" {
		if err := writeFile(o.htmlPath, r.WriteHTML); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create report: %w", err)
	}
	if err := write(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func headerMap(hs []string) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		k, v, _ := strings.Cut(h, ":")
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

// startEmbedded starts the in-process pipeline and says where it listens.
func startEmbedded(ctx context.Context, o *options, log zerolog.Logger, stderr io.Writer) (*stack.Stack, error) {
	cfg := stack.EphemeralConfig()
	if o.embeddedExecs > 0 {
		cfg.Executor.Count = o.embeddedExecs
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := stack.Start(sctx, cfg, log)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "embedded pipeline: origin %s, target %s, NATS %s\n", s.OriginWS(), s.TargetURL(), s.NATSURL())
	return s, nil
}

// startCPUProfile starts profiling into path; the returned func stops it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}
