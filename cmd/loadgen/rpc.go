package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/internal/stack"
	"github.com/pipeline-dev/pipeline/loadgen"
)

const rpcLong = `loadgen rpc measures what it costs to delegate a function call from the caller
(the origin's POST /call/<fn>) to the shared runtime, against running it inline:

  direct    the caller runs the function itself (the baseline)
  nats      the caller delegates over NATS request-reply to the runtime micro service
  http      the caller delegates over HTTP to the runtime's POST /rpc/<fn>
  nats-raw  loadgen requests the micro endpoint itself (no HTTP hop): the broker's own cost
  http-raw  loadgen posts to the runtime's POST /rpc/<fn> itself (--runtime, no caller hop)

Every function x payload x via is one case: a warm-up, then --iterations calls
(--concurrency in flight). The table shows p50/p95/p99/max latency in ms and the
overhead against direct for the same function and payload (+p50, +p99).
Payloads: echo gets N random bytes; transform {"data":"<letters>"} and compute
{"data":"<letters>","rounds":R} (R = --rounds, default 1, so compute measures
delegation rather than hashing), each N bytes in total.

Tokens: --token is the caller's bearer token (origin.auth_token), sent on
every /call; --runtime-token the runtime's (runtime.auth_token), sent by
http-raw (the caller sends its own for via http). Unset, they are read from
PIPELINE_ORIGIN_AUTH_TOKEN and PIPELINE_RUNTIME_AUTH_TOKEN, the variables
the pipeline itself reads, so they stay out of the process list.`

const rpcExample = `  # against 'pipeline up --embedded-nats' on this machine
  loadgen rpc

  # 1000 calls per case, the broker's own cost too, JSON for later
  loadgen rpc --preset full --via direct,nats,http,nats-raw --json rpc.json

  # only echo at 1 KB over NATS, 16 calls in flight
  loadgen rpc --fn echo --payload 1KB --via direct,nats --concurrency 16 --iterations 5000

  # against a pipeline with tokens on, the runtime's HTTP side measured too
  export PIPELINE_ORIGIN_AUTH_TOKEN=... PIPELINE_RUNTIME_AUTH_TOKEN=...
  loadgen rpc --via direct,nats,http,http-raw

  # start the whole pipeline in-process and measure it
  loadgen rpc --embedded --preset quick`

// rpcOptions are the parsed flags of `loadgen rpc`.
type rpcOptions struct {
	caller, natsURL, prefix string
	runtime                 string
	token, runtimeToken     string
	fns, vias, payloads     []string
	preset                  string
	iterations, warmup      int
	concurrency, rounds     int
	timeout                 time.Duration
	jsonPath                string
	embedded, quiet         bool
	log                     logFlags
	payloadSizes            []int
}

// newRPCCmd returns `loadgen rpc`.
func newRPCCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &rpcOptions{}
	cmd := &cobra.Command{
		Use:     "rpc",
		Short:   "Measure function delegation: direct, NATS, HTTP",
		Long:    rpcLong,
		Example: rpcExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd.Flags()); err != nil {
				return err
			}
			return status(runRPC(cmd.Context(), o, stdout, stderr))
		},
	}
	o.register(cmd.Flags())
	return cmd
}

// register defines the flags of `loadgen rpc` on fs, with their defaults.
func (o *rpcOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.caller, "caller", loadgen.DefaultCallerURL, "base `URL` of the caller (the origin serving /call/<fn>)")
	fs.StringVar(&o.token, "token", "", "the caller's bearer token (origin.auth_token); default $"+envOriginToken)
	fs.StringVar(&o.runtime, "runtime", loadgen.DefaultRuntimeURL, "base `URL` of the runtime's HTTP side for --via http-raw")
	fs.StringVar(&o.runtimeToken, "runtime-token", "", "the runtime's bearer token (runtime.auth_token) for --via http-raw; default $"+envRuntimeToken)
	fs.Var(listFlag{&o.fns}, "fn", "functions, comma-separated: echo, transform, compute (default all)")
	fs.Var(listFlag{&o.payloads}, "payload", "payload sizes, comma-separated, e.g. 100B,1KB,10KB,100KB (the default)")
	fs.Var(listFlag{&o.vias}, "via", "paths, comma-separated: direct, nats, http, nats-raw, http-raw (default direct,nats,http)")
	fs.StringVar(&o.preset, "preset", "standard", "iterations per case: quick (20), standard (100) or full (1000)")
	fs.IntVar(&o.iterations, "iterations", 0, "measured calls per case (instead of --preset)")
	fs.IntVar(&o.warmup, "warmup", 0, "unmeasured calls before each case; 0 = iterations/5 within [5, 200], -1 = none")
	fs.IntVar(&o.concurrency, "concurrency", loadgen.DefaultRPCConcurrency, "calls in flight")
	fs.IntVar(&o.rounds, "rounds", loadgen.DefaultRPCComputeRounds, "\"rounds\" of compute payloads")
	fs.DurationVar(&o.timeout, "timeout", loadgen.DefaultRPCTimeout, "deadline of one call")
	fs.StringVar(&o.jsonPath, "json", "", jsonUsage)
	fs.StringVar(&o.natsURL, "nats", nats.DefaultURL, "NATS `URL` for --via nats-raw")
	fs.StringVar(&o.prefix, "subject-prefix", "", "runtime subject prefix for nats-raw (default pipeline)")
	fs.BoolVar(&o.embedded, "embedded", false, "start the whole pipeline in-process on free ports and measure it (ignores --caller, --runtime and --nats)")
	fs.BoolVar(&o.quiet, "quiet", false, "no table and no per-case progress")
	o.log.register(fs)
}

// The environment variables --token and --runtime-token fall back to: the
// ones the pipeline reads for origin.auth_token and runtime.auth_token.
const (
	envOriginToken  = "PIPELINE_ORIGIN_AUTH_TOKEN"
	envRuntimeToken = "PIPELINE_RUNTIME_AUTH_TOKEN"
)

// validate checks the flags of `loadgen rpc` and derives iterations and
// payload sizes and the tokens not given as flags (from the environment);
// fs is the flag set o was registered on, after parsing.
func (o *rpcOptions) validate(fs *pflag.FlagSet) error {
	if !fs.Changed("token") {
		o.token = os.Getenv(envOriginToken)
	}
	if !fs.Changed("runtime-token") {
		o.runtimeToken = os.Getenv(envRuntimeToken)
	}
	if fs.Changed("preset") && fs.Changed("iterations") {
		return errors.New("--preset and --iterations both set: choose one")
	}
	if !fs.Changed("iterations") {
		n, err := loadgen.RPCPresetIterations(o.preset)
		if err != nil {
			return fmt.Errorf("--preset: %w", err)
		}
		o.iterations = n
	}
	if o.iterations <= 0 {
		return fmt.Errorf("--iterations %d: must be positive", o.iterations)
	}
	if o.concurrency <= 0 {
		return fmt.Errorf("--concurrency %d: must be positive", o.concurrency)
	}
	if o.rounds <= 0 {
		return fmt.Errorf("--rounds %d: must be positive", o.rounds)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", o.timeout)
	}
	if len(o.payloads) > 0 {
		sizes, err := loadgen.ParseRPCPayloads(strings.Join(o.payloads, ","))
		if err != nil {
			return fmt.Errorf("--payload: %w", err)
		}
		o.payloadSizes = sizes
	}
	return nil
}

// runRPC is `loadgen rpc` with the options validated: it runs
// loadgen.RunRPC and prints the report. It returns the process exit code: 0
// when every call succeeded, 1 when the caller or runtime is unreachable or
// calls failed, 130 when interrupted (the partial report is still printed).
func runRPC(ctx context.Context, o *rpcOptions, stdout, stderr io.Writer) int {
	log, err := logging.New(stderr, o.log.level, o.log.format)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen rpc:", err)
		return exitUsage
	}

	cfg := loadgen.RPCConfig{
		CallerURL:     o.caller,
		Token:         o.token,
		RuntimeURL:    o.runtime,
		RuntimeToken:  o.runtimeToken,
		NATSURL:       o.natsURL,
		SubjectPrefix: o.prefix,
		Fns:           o.fns,
		Payloads:      o.payloadSizes,
		Vias:          o.vias,
		Iterations:    o.iterations,
		Warmup:        o.warmup,
		Concurrency:   o.concurrency,
		Timeout:       o.timeout,
		ComputeRounds: o.rounds,
		Logger:        log,
	}
	if !o.quiet {
		cfg.Progress = stderr
	}
	if o.embedded {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := stack.StartEphemeral(sctx, log)
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "loadgen rpc: start embedded pipeline:", err)
			return exitFailed
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn().Err(err).Msg("embedded pipeline shutdown")
			}
		}()
		cfg.CallerURL, cfg.NATSURL, cfg.RuntimeURL = s.OriginHTTP(), s.NATSURL(), s.RuntimeHTTP()
		cfg.Token, cfg.RuntimeToken = "", "" // the embedded pipeline has none
		fmt.Fprintf(stderr, "embedded pipeline: caller %s, runtime %s, NATS %s\n", cfg.CallerURL, cfg.RuntimeURL, cfg.NATSURL)
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "loadgen rpc: %d iterations per case, concurrency %d, caller %s\n", o.iterations, o.concurrency, cfg.CallerURL)
	}

	rep, runErr := loadgen.RunRPC(ctx, cfg)
	code := exitOK
	switch {
	case runErr == nil:
	case errors.Is(runErr, loadgen.ErrCallerUnreachable), errors.Is(runErr, loadgen.ErrRuntimeUnreachable):
		fmt.Fprintf(stderr, "loadgen rpc: %v\n", runErr)
		return exitFailed
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "loadgen rpc: interrupted; the report below is partial")
		code = exitInterrupted
	default:
		fmt.Fprintf(stderr, "loadgen rpc: %v\n", runErr)
		code = exitFailed
	}
	if rep == nil {
		return max(code, exitFailed)
	}
	if o.jsonPath == "-" {
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintln(stderr, "loadgen rpc:", err)
			return exitFailed
		}
	} else {
		if !o.quiet {
			if err := rep.WriteText(stdout); err != nil {
				fmt.Fprintln(stderr, "loadgen rpc:", err)
				return exitFailed
			}
		}
		if o.jsonPath != "" {
			if err := writeFile(o.jsonPath, rep.WriteJSON); err != nil {
				fmt.Fprintln(stderr, "loadgen rpc:", err)
				return exitFailed
			}
		}
	}
	if n := rep.Errors(); n > 0 && code == exitOK {
		fmt.Fprintf(stderr, "loadgen rpc: %d calls failed (see errors above)\n", n)
		code = exitFailed
	}
	return code
}
