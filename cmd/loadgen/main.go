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
	"flag"
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

// defaultTargetBase is where `pipeline up` serves the test target.
const defaultTargetBase = "http://127.0.0.1:8090"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if len(os.Args) > 1 && os.Args[1] == "rpc" {
		code = runRPC(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

const usageText = `loadgen measures the pipeline from a client's point of view.

Usage:
  loadgen [flags]          fetch mode: start-fetch over WebSocket (PROTOCOL.md §1)
  loadgen rpc [flags]      function delegation: direct, NATS, HTTP (see loadgen rpc -h)

Load models:
  closed loop (default)  --concurrency fetches always in flight; each reply sends the next.
  open loop (--rate R)   R fetches per second on a fixed schedule, latency measured from
                         each fetch's intended send time (no coordinated omission);
                         --concurrency then caps fetches in flight (default max(100, R/10)).

Examples:
  # one-command demo: start the whole pipeline in-process and load it
  loadgen --embedded --concurrency 100 --requests 20000 --html report.html

  # against 'pipeline up --embedded-nats' on this machine
  loadgen --concurrency 100

  # the original proxy-fetch study: bursts of 10, 100, 1000 concurrent 14 ms fetches
  loadgen --sweep 10,100,1000 --target-url /delay?ms=14

  # 5000 fetches/s for 30 s over two origins, with a direct-fetch baseline
  loadgen --rate 5000 --duration 30s --origin ws://a:8080/ws --origin ws://b:8080/ws \
          --baseline --json result.json

Flags:
`

// options are the parsed command-line flags.
type options struct {
	origins        []string
	concurrency    int
	connections    int
	requests       int
	duration       time.Duration
	warmup         string
	rate           float64
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
	logLevel       string
	logFormat      string
	cpuProfile     string
	setFlags       map[string]bool
	sweepLevels    []int
	warmupRequests int
	warmupDuration time.Duration
	warmupAuto     bool
}

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

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	fs.Var(listFlag{&o.origins}, "origin", "origin WebSocket `URL`, repeatable or comma-separated; load is spread round robin (default "+loadgen.DefaultOrigin+")")
	fs.IntVar(&o.concurrency, "concurrency", loadgen.DefaultConcurrency, "fetches in flight (closed loop), or the cap on fetches in flight (open loop)")
	fs.IntVar(&o.connections, "connections", 0, "WebSocket connections to spread the fetches over; 0 = one per 100 in flight, at least 4 and one per origin, at most 64 and --concurrency")
	fs.IntVar(&o.requests, "requests", loadgen.DefaultRequests, "measured fetches (per level with --sweep: default level × --sweep-rounds)")
	fs.DurationVar(&o.duration, "duration", 0, "measure for this long instead of a fixed --requests (with --rate: rate × duration fetches)")
	fs.StringVar(&o.warmup, "warmup", "auto", "unmeasured fetches first, drained before measuring: a count (500), a duration (2s), 0 for none, or auto = min(1000, max(requests/10, concurrency)) fetches, or min(1s, duration/10)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: fetches per `second` on a fixed schedule; 0 = closed loop")
	fs.StringVar(&o.targetURL, "target-url", "", "`URL` the pipeline fetches; a value starting with / is relative to the test target (default "+defaultTargetBase+"/delay?ms=0, or the embedded target)")
	fs.StringVar(&o.method, "method", "GET", "HTTP method of the fetches")
	fs.Var(listFlag{&o.headers}, "header", "request header `Name: value` for the fetches, repeatable")
	fs.StringVar(&o.body, "body", "", "request body of the fetches")
	fs.DurationVar(&o.fetchTimeout, "fetch-timeout", 0, "sent as the fetch's timeout_ms; 0 = the origin's default")
	fs.DurationVar(&o.timeout, "timeout", loadgen.DefaultTimeout, "client-side deadline of one fetch; a fetch without reply by then counts as error code timeout")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", loadgen.DefaultDialTimeout, "deadline for a WebSocket handshake and the hello frame")
	fs.StringVar(&o.sweep, "sweep", "", "comma-separated concurrency `levels`, e.g. 10,100,1000: one run each, one table")
	fs.IntVar(&o.sweepRounds, "sweep-rounds", 1, "with --sweep and no --requests/--duration: fetches per slot per level (1 = one burst of `level` fetches, as in the original study)")
	fs.BoolVar(&o.baseline, "baseline", false, "also fetch the target directly (no pipeline) and report the latency the pipeline adds")
	fs.StringVar(&o.jsonPath, "json", "", "write the JSON report (PROTOCOL.md §5) to `FILE`; - for stdout (replaces the table)")
	fs.StringVar(&o.htmlPath, "html", "", "write a self-contained HTML report with plots to `FILE`")
	fs.BoolVar(&o.embedded, "embedded", false, "start the whole pipeline (NATS, origin, executor, target) in-process on free ports and load it")
	fs.IntVar(&o.embeddedExecs, "embedded-executors", 0, "with --embedded: executor workers; 0 = the stack's default")
	fs.BoolVar(&o.quiet, "quiet", false, "do not print the table")
	fs.BoolVar(&o.noProgress, "no-progress", false, "no live progress line (it is shown only when stderr is a terminal)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: auto, json or console")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of loadgen (and, with --embedded, the pipeline) to `FILE`")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	o.setFlags = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.setFlags[f.Name] = true })
	return o, o.validate()
}

// validate checks flag combinations and derives the values that depend on
// several flags.
func (o *options) validate() error {
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
	if o.rate > 0 && !o.setFlags["concurrency"] {
		o.concurrency = max(loadgen.DefaultConcurrency, int(math.Ceil(o.rate/10)))
	}
	if o.duration > 0 && !o.setFlags["requests"] {
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
		if !o.setFlags["requests"] {
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
	return nil
}

// targetFor resolves --target-url against the test target's base URL. Any
// other value is sent as given: even the pipeline's answer to a malformed
// URL is worth measuring.
func (o *options) targetFor(base string) string {
	switch t := o.targetURL; {
	case t == "":
		return base + "/delay?ms=0"
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

// run is the fetch-mode command; it returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		fmt.Fprintln(stderr, "run 'loadgen -h' for usage")
		return exitUsage
	}
	log, err := logging.New(stderr, o.logLevel, o.logFormat)
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

	targetBase := defaultTargetBase
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
	if len(o.sweepLevels) > 0 {
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
