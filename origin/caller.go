package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/httpserve"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Delegation paths (the via query parameter of /call/<fn>).
const (
	// ViaDirect runs the function inline in the origin's process
	// (CallConfig.Functions).
	ViaDirect = "direct"
	// ViaNATS delegates over NATS request-reply to the runtime service.
	ViaNATS = "nats"
	// ViaHTTP delegates over HTTP to the runtime's /rpc/<fn>.
	ViaHTTP = "http"
)

// DefaultCallTimeout bounds one delegated call when CallConfig.Timeout is
// zero.
const DefaultCallTimeout = 5 * time.Second

// DefaultCallMaxPayload caps a /call request body when
// CallConfig.MaxPayload is zero: 1 MiB, the runtime's own default.
const DefaultCallMaxPayload = 1 << 20

// Functions runs runtime functions inline, for via=direct. The runtime's
// Registry satisfies it; the origin declares it so that it need not import
// the runtime. Implementations must be safe for concurrent use.
type Functions interface {
	// Call runs function fn on req and returns the reply. A *broker.Error
	// of code CodeBadRequest is bad input (400), CodeTooLarge 413,
	// CodeTimeout 504; any other error is 500.
	Call(ctx context.Context, fn string, req []byte) ([]byte, error)
	// Has reports whether fn exists.
	Has(fn string) bool
}

// CallConfig configures the /call caller ("thin stub") an origin serves.
// The zero value works for via=nats (over the origin's own connection);
// set Functions for via=direct and RuntimeHTTP for via=http.
type CallConfig struct {
	// Functions runs functions inline for via=direct, and tells which
	// function names exist (others get 404 on every path). If nil,
	// via=direct fails with 502 and any valid subject token is delegated.
	Functions Functions
	// RuntimeHTTP is the base URL of the runtime's HTTP side, e.g.
	// http://127.0.0.1:8788. If empty, via=http fails with 502.
	RuntimeHTTP string
	// RuntimeToken, when set, is sent as the bearer token of via=http calls
	// (the runtime's HTTPConfig.AuthToken). Never logged.
	RuntimeToken string
	// Timeout bounds each delegated call (the request's own context may end
	// it sooner). If zero or negative, DefaultCallTimeout (5 s) is used.
	Timeout time.Duration
	// MaxPayload caps a request body in bytes, checked before running or
	// delegating; larger fails with 413. If zero or negative,
	// DefaultCallMaxPayload (1 MiB) is used.
	MaxPayload int
	// DefaultVia is used when a request has no via parameter. If empty,
	// ViaNATS is used.
	DefaultVia string
	// HTTPClient sends via=http calls. If nil, a client with a keep-alive
	// connection pool sized for high concurrency is used.
	HTTPClient *http.Client

	// Subjects, Logger and Metrics are the origin's own (Config.Subjects,
	// Config.Logger, Config.Metrics) when the origin builds the caller; set
	// them only for a Caller made with NewCaller.
	Subjects broker.Subjects
	Logger   zerolog.Logger
	Metrics  *metrics.Metrics
}

// CallError is a failed call: Status is the HTTP status /call answers with
// and Message the text of its {"error":"..."} body. Statuses: 400 bad
// input, 404 unknown function or via, 405 not POST, 413 body over the
// limit, 500 function failure, 502 runtime unreachable or path not
// configured, 504 timeout, 499 the caller's context was cancelled. Read it
// with errors.As.
type CallError struct {
	Status  int
	Message string
}

// Error implements the error interface.
func (e *CallError) Error() string {
	return fmt.Sprintf("call error %d: %s", e.Status, e.Message)
}

func callErrorf(status int, format string, args ...any) *CallError {
	return &CallError{Status: status, Message: fmt.Sprintf(format, args...)}
}

// asCallError returns err as a *CallError: the one in err's chain, or the
// status its broker code maps to (CodeBadRequest 400, CodeTooLarge 413,
// CodeTimeout 504, else 500) with its message. Nil for nil.
func asCallError(err error) *CallError {
	if err == nil {
		return nil
	}
	var ce *CallError
	if errors.As(err, &ce) {
		return ce
	}
	msg := err.Error()
	var be *broker.Error
	if errors.As(err, &be) {
		msg = be.Message
	}
	switch broker.CodeOf(err) {
	case broker.CodeBadRequest:
		return &CallError{Status: http.StatusBadRequest, Message: msg}
	case broker.CodeTooLarge:
		return &CallError{Status: http.StatusRequestEntityTooLarge, Message: msg}
	case broker.CodeTimeout:
		return &CallError{Status: http.StatusGatewayTimeout, Message: msg}
	}
	return &CallError{Status: http.StatusInternalServerError, Message: msg}
}

// statusOf is err's status for the metrics: 0 for success.
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	return asCallError(err).Status
}

// Caller is the thin stub that runs runtime functions inline or delegates
// them. It is an http.Handler for POST /call/<fn>?via=direct|nats|http; the
// origin mounts it at "/call/" behind its bearer token (Config.Call). The
// reply is the function's body, unchanged, with status 200; errors are JSON
// {"error":"..."} with a CallError status.
//
// A Caller is safe for concurrent use. Close releases its idle connections.
type Caller struct {
	nc          *nats.Conn
	fns         Functions
	subjects    broker.Subjects
	timeout     time.Duration
	maxPayload  int
	defaultVia  string
	client      *http.Client
	ownClient   bool
	runtimeURL  string // base URL with no trailing slash, or ""
	runtimeAuth string // Authorization header value for via=http, or ""
	log         zerolog.Logger
	bufs        httpserve.BodyPool
	m           *callerMetrics // nil: no metrics

	subjectCache sync.Map // fn → NATS subject
}

// NewCaller returns a Caller for cfg that delegates via=nats over nc (if nil,
// via=nats fails with 502). An origin builds its own from Config.Call; use
// NewCaller to serve /call elsewhere.
func NewCaller(nc *nats.Conn, cfg CallConfig) *Caller {
	c := &Caller{
		nc:         nc,
		fns:        cfg.Functions,
		subjects:   cfg.Subjects,
		timeout:    cfg.Timeout,
		maxPayload: cfg.MaxPayload,
		defaultVia: cfg.DefaultVia,
		client:     cfg.HTTPClient,
		runtimeURL: strings.TrimRight(cfg.RuntimeHTTP, "/"),
		runtimeAuth: func() string {
			if cfg.RuntimeToken == "" {
				return ""
			}
			return "Bearer " + cfg.RuntimeToken
		}(),
		m: newCallerMetrics(cfg.Metrics),
		log: cfg.Logger.With().Str("component", "rpc-caller").Logger().
			Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultCallTimeout
	}
	if c.maxPayload <= 0 {
		c.maxPayload = DefaultCallMaxPayload
	}
	if c.defaultVia == "" {
		c.defaultVia = ViaNATS
	}
	if c.client == nil {
		c.client = newPooledClient()
		c.ownClient = true
	}
	return c
}

// newPooledClient is an HTTP client for loopback/LAN delegation: keep-alive,
// many idle connections per host, no proxy.
func newPooledClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          4096,
			MaxIdleConnsPerHost:   4096,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 0, // bounded by the call's context
			DisableCompression:    true,
			ForceAttemptHTTP2:     false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Close releases the idle HTTP connections of the Caller's own client. The
// Caller stays usable.
func (c *Caller) Close() {
	if c.ownClient {
		c.client.CloseIdleConnections()
	}
}

// Call runs function fn on body by path via and returns the reply body. The
// reply may alias body. It fails with a *CallError: 404 for an unknown fn or
// via, 413 for a body over the limit, the function's own error (400 for bad
// input), 502 when no runtime is reachable or the path is not configured,
// 504 when the call timed out, and 499 when ctx was cancelled first.
func (c *Caller) Call(ctx context.Context, via, fn string, body []byte) ([]byte, error) {
	if c.m == nil {
		return c.call(ctx, via, fn, body)
	}
	start := time.Now()
	out, err := c.call(ctx, via, fn, body)
	c.m.called(c.fnLabel(fn), via, statusOf(err), time.Since(start))
	return out, err
}

// known reports whether fn names a function: one of Functions when set,
// else any valid subject token.
func (c *Caller) known(fn string) bool {
	if c.fns != nil {
		return c.fns.Has(fn)
	}
	return broker.ValidateToken("function", fn) == nil
}

// unknownFunction is the 404 for fn, listing the known functions when
// Functions can tell them (the runtime's Registry has Names).
func (c *Caller) unknownFunction(fn string) *CallError {
	lister, ok := c.fns.(interface{ Names() []string })
	if !ok {
		return callErrorf(http.StatusNotFound, "unknown function %q", fn)
	}
	want := strings.Join(lister.Names(), ", ")
	if i := strings.LastIndex(want, ", "); i >= 0 {
		want = want[:i] + " or " + want[i+2:]
	}
	return callErrorf(http.StatusNotFound, "unknown function %q (want %s)", fn, want)
}

func (c *Caller) call(ctx context.Context, via, fn string, body []byte) ([]byte, error) {
	if !c.known(fn) {
		return nil, c.unknownFunction(fn)
	}
	switch via {
	case ViaDirect, ViaNATS, ViaHTTP:
	default:
		return nil, callErrorf(http.StatusNotFound, "unknown via %q (want direct, nats or http)", via)
	}
	if len(body) > c.maxPayload {
		return nil, callErrorf(http.StatusRequestEntityTooLarge, "payload of %d bytes is over the %d-byte limit", len(body), c.maxPayload)
	}
	if via == ViaDirect {
		if c.fns == nil {
			return nil, callErrorf(http.StatusBadGateway, "direct calls are not configured on this caller")
		}
		out, err := c.fns.Call(ctx, fn, body)
		if err != nil {
			return nil, asCallError(err)
		}
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if via == ViaNATS {
		return c.callNATS(ctx, fn, body)
	}
	return c.callHTTP(ctx, fn, body)
}

// subject is fn's NATS subject, derived once per function.
func (c *Caller) subject(fn string) string {
	if s, ok := c.subjectCache.Load(fn); ok {
		return s.(string)
	}
	s := c.subjects.RPC(fn)
	if c.fns != nil { // a bounded set of names: worth keeping
		c.subjectCache.Store(fn, s)
	}
	return s
}

func (c *Caller) callNATS(ctx context.Context, fn string, body []byte) ([]byte, error) {
	if c.nc == nil {
		return nil, callErrorf(http.StatusBadGateway, "nats delegation is not configured on this caller")
	}
	subject := c.subject(fn)
	msg, err := c.nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return nil, c.delegationError(ctx, "nats", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		n, perr := strconv.Atoi(code)
		if perr != nil || n < 400 || n > 599 {
			n = http.StatusBadGateway
		}
		desc := msg.Header.Get(micro.ErrorHeader)
		if desc == "" {
			desc = "runtime error " + code
		}
		return nil, &CallError{Status: n, Message: desc}
	}
	return msg.Data, nil
}

func (c *Caller) callHTTP(ctx context.Context, fn string, body []byte) ([]byte, error) {
	if c.runtimeURL == "" {
		return nil, callErrorf(http.StatusBadGateway, "http delegation is not configured on this caller")
	}
	url := c.runtimeURL + "/rpc/" + fn
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("origin: build runtime request: %w", err)
	}
	req.Header["Content-Type"] = []string{"application/octet-stream"}
	if c.runtimeAuth != "" {
		req.Header["Authorization"] = []string{c.runtimeAuth}
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, c.delegationError(ctx, "http", url, err)
	}
	defer resp.Body.Close()
	// A reply is at most a few times the request (transform escapes), so
	// bound it generously rather than trusting the runtime blindly.
	limit := int64(8*c.maxPayload + 4096)
	var out []byte
	if resp.ContentLength >= 0 && resp.ContentLength <= limit {
		out = make([]byte, resp.ContentLength)
		_, err = io.ReadFull(resp.Body, out)
	} else {
		out, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	}
	if err != nil {
		return nil, c.delegationError(ctx, "http", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &CallError{Status: resp.StatusCode, Message: errorMessage(out, resp.Status)}
	}
	return out, nil
}

// errorMessage extracts "error" from a {"error":"..."} body, or returns
// fallback.
func errorMessage(b []byte, fallback string) string {
	var body struct {
		Error *string `json:"error"`
	}
	if json.Unmarshal(b, &body) != nil || body.Error == nil {
		return fallback
	}
	return *body.Error
}

// delegationError maps a failed delegation to 502 (unreachable) or 504
// (timed out), or 499 when the caller's own context was cancelled.
func (c *Caller) delegationError(ctx context.Context, via, target string, err error) *CallError {
	var e *CallError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || isTimeout(err):
		e = callErrorf(http.StatusGatewayTimeout, "runtime did not answer %s within %s", target, c.timeout)
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		e = callErrorf(statusClientClosed, "call cancelled: %v", err)
	case errors.Is(err, nats.ErrNoResponders):
		e = callErrorf(http.StatusBadGateway, "no runtime instance is serving %s", target)
	case errors.Is(err, nats.ErrMaxPayload):
		e = callErrorf(http.StatusRequestEntityTooLarge, "payload is over the NATS server's max payload")
	default:
		e = callErrorf(http.StatusBadGateway, "runtime unreachable over %s (%s): %v", via, target, err)
	}
	if e.Status >= 500 {
		c.log.Warn().Str("via", via).Str("target", target).Err(err).Msg("delegation failed")
	}
	return e
}

// statusClientClosed is the conventional status for a request whose client
// went away (nginx's 499); it is only logged, never written to anyone.
const statusClientClosed = 499

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ServeHTTP serves POST /call/<fn>?via=direct|nats|http. The function name
// is the last path segment, so the handler works mounted at "/call/" and
// under http.StripPrefix alike.
func (c *Caller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeCallError(w, callErrorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method))
		return
	}
	via := c.defaultVia
	if r.URL.RawQuery != "" {
		if v := r.URL.Query().Get("via"); v != "" {
			via = v
		}
	}
	if !c.known(fn) {
		writeCallError(w, c.unknownFunction(fn))
		return
	}
	buf, rerr := readBody(&c.bufs, w, r, c.maxPayload)
	if rerr != nil {
		writeCallError(w, rerr)
		return
	}
	defer buf.Release()
	out, err := c.Call(r.Context(), via, fn, buf.B)
	if err != nil {
		e := asCallError(err)
		if e.Status == statusClientClosed {
			return // nobody is listening
		}
		writeCallError(w, e)
		return
	}
	writeCallReply(w, fn, out)
}

// callContentType is the media type of fn's reply: application/json for
// the runtime's JSON built-ins (transform, compute), else
// application/octet-stream.
func callContentType(fn string) string {
	if fn == "transform" || fn == "compute" {
		return "application/json"
	}
	return "application/octet-stream"
}

// writeCallReply writes a function's successful reply.
func writeCallReply(w http.ResponseWriter, fn string, out []byte) {
	h := w.Header()
	h["Content-Type"] = []string{callContentType(fn)}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out) // a failed write means the client went away
}

// writeCallError writes e as {"error":"..."} with status e.Status.
func writeCallError(w http.ResponseWriter, e *CallError) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the runtime writes them
	_ = enc.Encode(struct {
		Error string `json:"error"`
	}{e.Message}) // a struct of one string cannot fail
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

// readBody reads r's body into a pooled buffer: a body over max is a 413
// CallError, a failed read a 400 one.
func readBody(p *httpserve.BodyPool, w http.ResponseWriter, r *http.Request, max int) (*httpserve.Body, *CallError) {
	buf, err := p.Read(w, r, max)
	if err == nil {
		return buf, nil
	}
	if tl, ok := errors.AsType[*httpserve.TooLargeError](err); ok {
		return nil, callErrorf(http.StatusRequestEntityTooLarge, "%s", tl.Error())
	}
	return nil, callErrorf(http.StatusBadRequest, "%v", err)
}
