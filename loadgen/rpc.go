package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
)

// Delegation paths measured by RunRPC. The first three go through the
// caller's POST /call/<fn>?via=...; RPCViaNATSRaw has loadgen itself request
// the runtime's micro endpoint, with no HTTP hop, and RPCViaHTTPRaw has it
// post to the runtime's HTTP side (POST /rpc/<fn>) itself, with no caller.
const (
	RPCViaDirect  = "direct"
	RPCViaNATS    = "nats"
	RPCViaHTTP    = "http"
	RPCViaNATSRaw = "nats-raw"
	RPCViaHTTPRaw = "http-raw"
)

// The runtime's built-in functions (PROTOCOL.md §3) RunRPC measures.
const (
	fnEcho      = "echo"
	fnTransform = "transform"
	fnCompute   = "compute"
)

// Defaults of RPCConfig.
const (
	// DefaultCallerURL is where `pipeline up` serves the caller (the origin).
	DefaultCallerURL = "http://127.0.0.1:8080"
	// DefaultRuntimeURL is where `pipeline up` serves the runtime's HTTP
	// side (runtime.listen), measured by via http-raw.
	DefaultRuntimeURL = "http://127.0.0.1:8788"
	// DefaultRPCComputeRounds is the rounds value in compute payloads: one
	// SHA-256 pass, so that compute measures delegation and not hashing.
	DefaultRPCComputeRounds = 1
	// DefaultRPCConcurrency is the number of calls in flight: one, so that
	// latency is not queueing.
	DefaultRPCConcurrency = 1
	// DefaultRPCTimeout bounds each call.
	DefaultRPCTimeout = 10 * time.Second
)

// RPCPresetIterations returns the iterations per case of a `loadgen rpc
// --preset`: quick 20, standard 100, full 1000. An unknown name is an error.
func RPCPresetIterations(name string) (int, error) {
	switch name {
	case "quick":
		return 20, nil
	case "standard":
		return 100, nil
	case "full":
		return 1000, nil
	}
	return 0, fmt.Errorf("unknown preset %q (want quick, standard or full)", name)
}

// ErrCallerUnreachable is returned (wrapped) by RunRPC when no caller answers
// at RPCConfig.CallerURL, or it refuses RPCConfig.Token (HTTP 401).
var ErrCallerUnreachable = errors.New("caller unreachable")

// ErrRuntimeUnreachable is returned (wrapped) by RunRPC for via nats-raw
// when NATS cannot be reached or no runtime service answers on it, and for
// via http-raw when nothing answers at RPCConfig.RuntimeURL or it refuses
// RPCConfig.RuntimeToken (HTTP 401).
var ErrRuntimeUnreachable = errors.New("runtime unreachable")

// RPCConfig configures RunRPC. The zero value measures echo, transform and
// compute at 100 B, 1 KB, 10 KB and 100 KB via direct, nats and http against
// DefaultCallerURL, 100 iterations per case, one at a time.
type RPCConfig struct {
	// CallerURL is the base URL of the caller (the origin serving /call/).
	// If empty, DefaultCallerURL is used.
	CallerURL string
	// Token, when set, is sent as the caller's bearer token
	// (Authorization: Bearer, the origin's origin.auth_token) on every
	// /call request. Never reported or logged.
	Token string
	// RuntimeURL is the base URL of the runtime's HTTP side for via
	// http-raw. If empty, DefaultRuntimeURL is used.
	RuntimeURL string
	// RuntimeToken, when set, is sent as the runtime's bearer token
	// (runtime.auth_token) on every via http-raw request. Never reported
	// or logged. (The caller sends its own for via http.)
	RuntimeToken string
	// NATSURL is the NATS server for via nats-raw. If empty,
	// nats://127.0.0.1:4222 is used. Ignored when NATSConn is set.
	NATSURL string
	// NATSConn, if set, is used for via nats-raw instead of connecting to
	// NATSURL (it is not closed).
	NATSConn *nats.Conn
	// SubjectPrefix is the runtime's subject prefix for nats-raw. If empty,
	// "pipeline" is used.
	SubjectPrefix string
	// Fns are the functions to measure. If empty: echo, transform, compute.
	Fns []string
	// Payloads are the request body sizes in bytes. If empty: 100, 1024,
	// 10240, 102400.
	Payloads []int
	// Vias are the paths to measure: direct, nats, http, nats-raw, http-raw. If empty:
	// direct, nats, http. Overheads are computed against direct.
	Vias []string
	// Iterations is the number of measured calls per case. If zero, 100.
	Iterations int
	// Warmup is the number of unmeasured calls before each case. If zero,
	// Iterations/5 clamped to [5, 200]; negative means none.
	Warmup int
	// Concurrency is the number of calls in flight (closed loop). If zero,
	// DefaultRPCConcurrency (1).
	Concurrency int
	// Timeout bounds each call. If zero, DefaultRPCTimeout (10 s).
	Timeout time.Duration
	// ComputeRounds is the "rounds" of compute payloads. If zero,
	// DefaultRPCComputeRounds (1).
	ComputeRounds int
	// Progress, if set, gets one line per finished case.
	Progress io.Writer
	// HTTPClient sends the calls to the caller. If nil, a keep-alive client
	// sized for Concurrency is used.
	HTTPClient *http.Client
	// Logger receives diagnostics. The zero value discards them.
	Logger zerolog.Logger
}

// RPCReport is the result of RunRPC, the JSON object of PROTOCOL.md §5 for
// `loadgen rpc`.
type RPCReport struct {
	Mode          string    `json:"mode"` // always "rpc"
	Caller        string    `json:"caller"`
	Runtime       string    `json:"runtime,omitempty"` // via http-raw only
	NATS          string    `json:"nats,omitempty"`
	Concurrency   int       `json:"concurrency"`
	Iterations    int       `json:"iterations"`
	Warmup        int       `json:"warmup"`
	ComputeRounds int       `json:"compute_rounds"`
	DurationS     float64   `json:"duration_s"`
	Cases         []RPCCase `json:"cases"`
}

// RPCCase is one (fn, payload, via) measurement. Latencies are of successful
// calls only, in milliseconds, measured from sending the request to having
// read the whole reply.
type RPCCase struct {
	Fn            string           `json:"fn"`
	PayloadBytes  int              `json:"payload_bytes"`
	Via           string           `json:"via"`
	Iterations    int              `json:"iterations"`
	OK            int64            `json:"ok"`
	Errors        int64            `json:"errors"`
	ThroughputRPS float64          `json:"throughput_rps"`
	LatencyMS     LatencySummary   `json:"latency_ms"`
	OverheadMS    *RPCOverhead     `json:"overhead_ms,omitempty"`
	ErrorsByCode  map[string]int64 `json:"errors_by_code,omitempty"`
	LastError     string           `json:"last_error,omitempty"`
}

// RPCOverhead is a case's latency minus the via=direct case's latency for the
// same function and payload, in milliseconds (absent when direct was not
// measured).
type RPCOverhead struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// Errors returns the total number of failed calls over all cases.
func (r *RPCReport) Errors() int64 {
	var n int64
	for _, c := range r.Cases {
		n += c.Errors
	}
	return n
}

// RPCPayload builds the request body RunRPC sends to fn for a payload of size
// bytes: for echo, size pseudo-random bytes; for transform,
// {"data":"<letters>"}; for compute, {"data":"<letters>","rounds":rounds};
// the letters are sized so that the whole body is size bytes (or the
// smallest valid body when size is smaller). The same arguments always give
// the same bytes.
func RPCPayload(fn string, size, rounds int) []byte {
	rng := rand.New(rand.NewPCG(uint64(size), uint64(len(fn))))
	letters := func(n int) []byte {
		const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"
		b := make([]byte, max(n, 0))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return b
	}
	switch fn {
	case fnTransform:
		const wrap = len(`{"data":""}`)
		return fmt.Appendf(nil, `{"data":"%s"}`, letters(size-wrap))
	case fnCompute:
		tail := `","rounds":` + strconv.Itoa(rounds) + `}`
		return fmt.Appendf(nil, `{"data":"%s%s`, letters(size-len(`{"data":"`)-len(tail)), tail)
	default:
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
}

// ParseRPCPayloads parses a comma-separated list of sizes such as
// "100B,1KB,10KB,100KB": a number with an optional unit B, KB/KiB (1024) or
// MB/MiB (1024²), case-insensitive.
func ParseRPCPayloads(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		num, mult := strings.ToUpper(f), 1
		for _, u := range []struct {
			suffix string
			mult   int
		}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
			if strings.HasSuffix(num, u.suffix) {
				num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
				break
			}
		}
		n, err := strconv.Atoi(num)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad payload size %q: want e.g. 100B, 1KB, 10KB", f)
		}
		out = append(out, n*mult)
	}
	if len(out) == 0 {
		return nil, errors.New("no payload sizes given")
	}
	return out, nil
}

// RPCSizeName formats a payload size the way ParseRPCPayloads reads it:
// 100B, 1KB, 100KB, 1MB.
func RPCSizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "MB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "KB"
	default:
		return strconv.Itoa(n) + "B"
	}
}

func (cfg RPCConfig) withDefaults() (RPCConfig, error) {
	if cfg.CallerURL == "" {
		cfg.CallerURL = DefaultCallerURL
	}
	cfg.CallerURL = strings.TrimRight(cfg.CallerURL, "/")
	if !strings.HasPrefix(cfg.CallerURL, "http://") && !strings.HasPrefix(cfg.CallerURL, "https://") {
		return cfg, fmt.Errorf("caller URL %q: want http://HOST:PORT", cfg.CallerURL)
	}
	if cfg.RuntimeURL == "" {
		cfg.RuntimeURL = DefaultRuntimeURL
	}
	cfg.RuntimeURL = strings.TrimRight(cfg.RuntimeURL, "/")
	if !strings.HasPrefix(cfg.RuntimeURL, "http://") && !strings.HasPrefix(cfg.RuntimeURL, "https://") {
		return cfg, fmt.Errorf("runtime URL %q: want http://HOST:PORT", cfg.RuntimeURL)
	}
	if cfg.NATSURL == "" {
		cfg.NATSURL = nats.DefaultURL
	}
	if len(cfg.Fns) == 0 {
		cfg.Fns = []string{fnEcho, fnTransform, fnCompute}
	}
	for _, fn := range cfg.Fns {
		if fn != fnEcho && fn != fnTransform && fn != fnCompute {
			return cfg, fmt.Errorf("unknown function %q (want echo, transform, compute)", fn)
		}
	}
	if len(cfg.Payloads) == 0 {
		cfg.Payloads = []int{100, 1 << 10, 10 << 10, 100 << 10}
	}
	for _, p := range cfg.Payloads {
		if p <= 0 {
			return cfg, fmt.Errorf("payload size %d: must be positive", p)
		}
	}
	if len(cfg.Vias) == 0 {
		cfg.Vias = []string{RPCViaDirect, RPCViaNATS, RPCViaHTTP}
	}
	for _, v := range cfg.Vias {
		switch v {
		case RPCViaDirect, RPCViaNATS, RPCViaHTTP, RPCViaNATSRaw, RPCViaHTTPRaw:
		default:
			return cfg, fmt.Errorf("unknown via %q (want direct, nats, http, nats-raw, http-raw)", v)
		}
	}
	if cfg.Iterations < 0 || cfg.Concurrency < 0 || cfg.ComputeRounds < 0 || cfg.Timeout < 0 {
		return cfg, errors.New("iterations, concurrency, rounds and timeout must not be negative")
	}
	if cfg.Iterations == 0 {
		cfg.Iterations = 100
	}
	switch {
	case cfg.Warmup == 0:
		cfg.Warmup = min(max(cfg.Iterations/5, 5), 200)
	case cfg.Warmup < 0:
		cfg.Warmup = 0
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultRPCConcurrency
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultRPCTimeout
	}
	if cfg.ComputeRounds == 0 {
		cfg.ComputeRounds = DefaultRPCComputeRounds
	}
	return cfg, nil
}

// rpcRunner holds what every case shares.
type rpcRunner struct {
	cfg    RPCConfig
	client *http.Client
	nc     *nats.Conn
	log    zerolog.Logger
}

// RunRPC measures every combination of cfg.Fns × cfg.Payloads × cfg.Vias, one
// case after the other: Warmup unmeasured calls, then Iterations measured
// calls with Concurrency in flight. Calls that fail are counted per case, not
// returned as errors.
//
// Before measuring it checks that the caller answers (else it fails with
// ErrCallerUnreachable) and, for nats-raw and http-raw, that a runtime
// answers over NATS or HTTP (else ErrRuntimeUnreachable). When ctx ends mid-run it returns the cases
// finished so far together with ctx's error.
func RunRPC(ctx context.Context, cfg RPCConfig) (*RPCReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("loadgen rpc: %w", err)
	}
	r := &rpcRunner{cfg: cfg, client: cfg.HTTPClient, log: cfg.Logger}
	if r.client == nil {
		tr := &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        2*cfg.Concurrency + 16,
			MaxIdleConnsPerHost: 2*cfg.Concurrency + 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
		defer tr.CloseIdleConnections()
		r.client = &http.Client{Transport: tr}
	}
	if err := r.preflight(ctx); err != nil {
		return nil, err
	}
	if r.nc != nil && r.nc != cfg.NATSConn {
		defer r.nc.Close()
	}

	rep := &RPCReport{
		Mode:          "rpc",
		Caller:        cfg.CallerURL,
		Concurrency:   cfg.Concurrency,
		Iterations:    cfg.Iterations,
		Warmup:        cfg.Warmup,
		ComputeRounds: cfg.ComputeRounds,
	}
	if r.nc != nil {
		rep.NATS = r.nc.ConnectedUrlRedacted()
	}
	if slices.Contains(cfg.Vias, RPCViaHTTPRaw) {
		rep.Runtime = cfg.RuntimeURL
	}
	start := time.Now()
	defer func() { rep.DurationS = roundMs(time.Since(start).Seconds()) }()
	for _, fn := range cfg.Fns {
		for _, size := range cfg.Payloads {
			body := RPCPayload(fn, size, cfg.ComputeRounds)
			for _, via := range orderVias(cfg.Vias) {
				c, err := r.runCase(ctx, fn, body, via)
				if err != nil {
					rpcOverheads(rep.Cases)
					return rep, fmt.Errorf("loadgen rpc: %w", err)
				}
				rep.Cases = append(rep.Cases, c)
				if c.Errors > 0 {
					r.log.Warn().Str("fn", fn).Int("payload", len(body)).Str("via", via).
						Int64("errors", c.Errors).Str("last_error", c.LastError).Msg("rpc case had errors")
				}
				if cfg.Progress != nil {
					fmt.Fprintf(cfg.Progress, "  %-9s %6s  %-8s p50 %8.3f ms  p99 %8.3f ms  %d/%d ok\n",
						fn, RPCSizeName(len(body)), via, c.LatencyMS.P50, c.LatencyMS.P99, c.OK, c.Iterations)
				}
			}
		}
	}
	rpcOverheads(rep.Cases)
	return rep, nil
}

// orderVias puts direct first so that its numbers exist when the others are
// compared with it (and keeps the rest in the given order).
func orderVias(vias []string) []string {
	out := make([]string, 0, len(vias))
	for _, v := range vias {
		if v == RPCViaDirect {
			out = append(out, v)
		}
	}
	for _, v := range vias {
		if v != RPCViaDirect {
			out = append(out, v)
		}
	}
	return out
}

// preflight makes one call per kind of target so that an unreachable caller
// or runtime is one clear error rather than thousands of failed calls.
func (r *rpcRunner) preflight(ctx context.Context) error {
	needCaller, needNATS, needRuntime := false, false, false
	for _, v := range r.cfg.Vias {
		switch v {
		case RPCViaNATSRaw:
			needNATS = true
		case RPCViaHTTPRaw:
			needRuntime = true
		default:
			needCaller = true
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if needCaller {
		if err := r.ping(pctx, r.cfg.CallerURL+"/call/echo?via=direct", r.cfg.Token, "--token", "/call/<fn>"); err != nil {
			return fmt.Errorf("%w: %s: %w; start one with `pipeline up --embedded-nats` or point --caller at it",
				ErrCallerUnreachable, r.cfg.CallerURL, err)
		}
	}
	if needRuntime {
		if err := r.ping(pctx, r.cfg.RuntimeURL+"/rpc/echo", r.cfg.RuntimeToken, "--runtime-token", "/rpc/<fn>"); err != nil {
			return fmt.Errorf("%w: %s: %w; point --runtime at the runtime's HTTP side (runtime.listen)",
				ErrRuntimeUnreachable, r.cfg.RuntimeURL, err)
		}
	}
	if needNATS {
		nc := r.cfg.NATSConn
		if nc == nil {
			var err error
			nc, err = nats.Connect(r.cfg.NATSURL, nats.Name("loadgen rpc"), nats.Timeout(5*time.Second))
			if err != nil {
				return fmt.Errorf("%w: cannot connect to %s (%v); pass --nats URL", ErrRuntimeUnreachable, r.cfg.NATSURL, err)
			}
		}
		r.nc = nc
		subject := broker.Subjects{Prefix: r.cfg.SubjectPrefix}.RPC(fnEcho)
		if _, err := nc.RequestWithContext(pctx, subject, []byte("ping")); err != nil {
			if nc != r.cfg.NATSConn {
				nc.Close()
			}
			r.nc = nil
			return fmt.Errorf("%w: no runtime service answers on %s (%v)", ErrRuntimeUnreachable, subject, err)
		}
	}
	return nil
}

// errUnauthorized is a preflight refused with HTTP 401.
var errUnauthorized = errors.New("HTTP 401: missing or wrong bearer token")

// ping posts "ping" to echo at url with token (if set) and checks the
// echo; flag names the option that sets token and route the endpoint, for
// the error.
func (r *rpcRunner) ping(ctx context.Context, url, token, flag, route string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("ping"))
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	setBearer(req, token)
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("no answer (%w)", rpcRootCause(err))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized && token == "":
		return fmt.Errorf("%w (pass %s)", errUnauthorized, flag)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w (check %s)", errUnauthorized, flag)
	case resp.StatusCode != http.StatusOK || string(body) != "ping":
		return fmt.Errorf("does not serve POST %s (HTTP %d: %.200s)", route, resp.StatusCode, body)
	}
	return nil
}

// setBearer sets req's Authorization to "Bearer <token>" when token is set.
func setBearer(req *http.Request, token string) {
	if token != "" {
		req.Header["Authorization"] = []string{"Bearer " + token}
	}
}

// rpcCaseState collects one case's results from its workers.
type rpcCaseState struct {
	hist    *Histogram
	ok      atomic.Int64
	errs    atomic.Int64
	mu      sync.Mutex
	byCode  map[string]int64
	lastErr string
}

func (s *rpcCaseState) fail(code string, err error) {
	s.errs.Add(1)
	s.mu.Lock()
	s.byCode[code]++
	s.lastErr = err.Error()
	s.mu.Unlock()
}

// runCase measures one (fn, payload, via) combination. It returns an error
// only when ctx ended.
func (r *rpcRunner) runCase(ctx context.Context, fn string, body []byte, via string) (RPCCase, error) {
	var call rpcCall
	switch via {
	case RPCViaNATSRaw:
		call = r.natsCall(fn, body)
	case RPCViaHTTPRaw:
		call = r.httpCall(r.cfg.RuntimeURL+"/rpc/"+fn, r.cfg.RuntimeToken, fn, body)
	default:
		call = r.httpCall(r.cfg.CallerURL+"/call/"+fn+"?via="+via, r.cfg.Token, fn, body)
	}
	workers := min(r.cfg.Concurrency, r.cfg.Iterations)

	run := func(n int, st *rpcCaseState) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				var buf bytes.Buffer
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					start := time.Now()
					code, err := call(ctx, &buf)
					d := time.Since(start)
					if st == nil {
						continue
					}
					if err != nil {
						st.fail(code, err)
						continue
					}
					st.ok.Add(1)
					st.hist.Record(d)
				}
			})
		}
		wg.Wait()
	}

	run(r.cfg.Warmup, nil)
	st := &rpcCaseState{hist: NewHistogram(), byCode: map[string]int64{}}
	start := time.Now()
	run(r.cfg.Iterations, st)
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return RPCCase{}, err
	}
	c := RPCCase{
		Fn:           fn,
		PayloadBytes: len(body),
		Via:          via,
		Iterations:   r.cfg.Iterations,
		OK:           st.ok.Load(),
		Errors:       st.errs.Load(),
		LatencyMS:    st.hist.Summary(),
		LastError:    st.lastErr,
	}
	if len(st.byCode) > 0 {
		c.ErrorsByCode = st.byCode
	}
	if elapsed > 0 {
		c.ThroughputRPS = math.Round(float64(c.OK)/elapsed.Seconds()*10) / 10
	}
	return c, nil
}

// rpcCall makes one call, reading the reply into buf; on failure it returns
// an error code for errors_by_code.
type rpcCall func(ctx context.Context, buf *bytes.Buffer) (code string, err error)

// httpCall calls POST url (the caller's /call/<fn>?via=<via> or the
// runtime's /rpc/<fn>) with token as its bearer token, if set.
func (r *rpcRunner) httpCall(url, token, fn string, body []byte) rpcCall {
	return func(ctx context.Context, buf *bytes.Buffer) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return "request", err
		}
		req.Header["Content-Type"] = []string{"application/octet-stream"}
		setBearer(req, token)
		resp, err := r.client.Do(req)
		if err != nil {
			return rpcNetCode(err), err
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			return rpcNetCode(err), err
		}
		if resp.StatusCode != http.StatusOK {
			return "http_" + strconv.Itoa(resp.StatusCode), fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf.Bytes())
		}
		if fn == fnEcho && buf.Len() != len(body) {
			return "bad_reply", fmt.Errorf("echo returned %d bytes, sent %d", buf.Len(), len(body))
		}
		return "", nil
	}
}

// natsCall requests the runtime's micro endpoint directly.
func (r *rpcRunner) natsCall(fn string, body []byte) rpcCall {
	subject := broker.Subjects{Prefix: r.cfg.SubjectPrefix}.RPC(fn)
	return func(ctx context.Context, _ *bytes.Buffer) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		msg, err := r.nc.RequestWithContext(ctx, subject, body)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return "no_responders", err
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			return "timeout", err
		case err != nil:
			return "nats", err
		}
		if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
			return "nats_" + code, fmt.Errorf("runtime error %s: %s", code, msg.Header.Get(micro.ErrorHeader))
		}
		if fn == fnEcho && len(msg.Data) != len(body) {
			return "bad_reply", fmt.Errorf("echo returned %d bytes, sent %d", len(msg.Data), len(body))
		}
		return "", nil
	}
}

// rpcNetCode classifies a transport error.
func rpcNetCode(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	default:
		return "connection"
	}
}

// rpcRootCause strips url.Error's "Post \"...\": " prefix for a short message.
func rpcRootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		if _, ok := err.(*net.OpError); ok {
			return err
		}
		err = u
	}
}

// rpcOverheads fills OverheadMS of every case whose function and payload
// also have a direct case.
func rpcOverheads(cases []RPCCase) {
	type key struct {
		fn   string
		size int
	}
	direct := map[key]LatencySummary{}
	for _, c := range cases {
		if c.Via == RPCViaDirect && c.OK > 0 {
			direct[key{c.Fn, c.PayloadBytes}] = c.LatencyMS
		}
	}
	for i := range cases {
		c := &cases[i]
		d, ok := direct[key{c.Fn, c.PayloadBytes}]
		if !ok || c.OK == 0 {
			continue
		}
		c.OverheadMS = &RPCOverhead{P50: roundMs(c.LatencyMS.P50 - d.P50), P99: roundMs(c.LatencyMS.P99 - d.P99)}
	}
}

// roundMs rounds to the microsecond (3 decimals), removing float noise.
func roundMs(v float64) float64 { return math.Round(v*1000) / 1000 }

// WriteJSON writes the report as one indented JSON object (PROTOCOL.md §5).
func (r *RPCReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("loadgen rpc: write JSON report: %w", err)
	}
	return nil
}

// WriteText writes the report as a table: one row per case with p50, p95,
// p99 and max latency, the overhead against direct (+p50, +p99), throughput
// and errors, all latencies in milliseconds.
func (r *RPCReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "loadgen rpc: caller %s", r.Caller)
	if r.NATS != "" {
		fmt.Fprintf(&b, ", nats %s", r.NATS)
	}
	fmt.Fprintf(&b, "\n%d iterations per case after %d warm-up, concurrency %d, compute rounds %d, %.1f s\n\n",
		r.Iterations, r.Warmup, r.Concurrency, r.ComputeRounds, r.DurationS)
	var tb bytes.Buffer
	tw := tabwriter.NewWriter(&tb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-9s  %-7s  %-8s\tok\tp50 ms\tp95 ms\tp99 ms\tmax ms\t+p50 ms\t+p99 ms\treq/s\terrors\t\n", "fn", "payload", "via")
	prev := ""
	for _, c := range r.Cases {
		group := c.Fn + "/" + strconv.Itoa(c.PayloadBytes)
		if prev != "" && group != prev {
			fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t")
		}
		prev = group
		over50, over99 := "-", "-"
		if c.OverheadMS != nil && c.Via != RPCViaDirect {
			over50, over99 = fmt.Sprintf("%+.3f", c.OverheadMS.P50), fmt.Sprintf("%+.3f", c.OverheadMS.P99)
		}
		fmt.Fprintf(tw, "%-9s  %-7s  %-8s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%.0f\t%d\t\n",
			c.Fn, RPCSizeName(c.PayloadBytes), c.Via, c.OK,
			c.LatencyMS.P50, c.LatencyMS.P95, c.LatencyMS.P99, c.LatencyMS.Max,
			over50, over99, c.ThroughputRPS, c.Errors)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("loadgen rpc: write table: %w", err)
	}
	// Empty separator rows are all padding: trim trailing spaces.
	for _, line := range strings.SplitAfter(tb.String(), "\n") {
		b.WriteString(strings.TrimRight(line, " \n"))
		if strings.HasSuffix(line, "\n") {
			b.WriteByte('\n')
		}
	}
	for _, c := range r.Cases {
		if c.Errors > 0 {
			fmt.Fprintf(&b, "\n%s %s via %s: %d errors %v, last: %s", c.Fn, RPCSizeName(c.PayloadBytes), c.Via, c.Errors, c.ErrorsByCode, c.LastError)
		}
	}
	if r.Errors() > 0 {
		b.WriteByte('\n')
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("loadgen rpc: write table: %w", err)
	}
	return nil
}
