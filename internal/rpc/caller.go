package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Delegation paths (the via query parameter of /call/<fn>).
const (
	// ViaDirect runs the function inline in the caller's process.
	ViaDirect = "direct"
	// ViaNATS delegates over NATS request-reply to the runtime service.
	ViaNATS = "nats"
	// ViaHTTP delegates over HTTP to the runtime's /rpc/<fn>.
	ViaHTTP = "http"
)

// DefaultCallTimeout bounds one delegated call when CallerConfig.Timeout is
// zero.
const DefaultCallTimeout = 5 * time.Second

// CallerConfig configures a Caller. The zero value works for via=direct; set
// NC for via=nats and RuntimeHTTP for via=http.
type CallerConfig struct {
	// NC is the connection delegated calls go through. If nil, via=nats
	// fails with 502.
	NC *nats.Conn
	// RuntimeHTTP is the base URL of the runtime's HTTP side, e.g.
	// http://127.0.0.1:8788. If empty, via=http fails with 502.
	RuntimeHTTP string
	// SubjectPrefix is the subject prefix of the runtime endpoints. If empty,
	// "pipeline" is used.
	SubjectPrefix string
	// Timeout bounds each delegated call (the request's own context may end
	// it sooner). If zero or negative, DefaultCallTimeout (5 s) is used.
	Timeout time.Duration
	// Limits bound request bodies (checked before delegating) and direct
	// calls; the zero value uses DefaultLimits.
	Limits Limits
	// DefaultVia is used when a request has no via parameter. If empty,
	// ViaNATS is used.
	DefaultVia string
	// HTTPClient sends via=http calls. If nil, a client with a keep-alive
	// connection pool sized for high concurrency is used.
	HTTPClient *http.Client
	// Logger receives delegation failures (rate-limited). The zero value
	// discards them.
	Logger zerolog.Logger
	// Metrics, when set, counts the calls (pipeline_rpc_calls_total,
	// pipeline_rpc_seconds). Default: none.
	Metrics *metrics.Metrics
}

// Caller is the thin stub that runs runtime functions inline or delegates
// them. It is an http.Handler for POST /call/<fn>?via=direct|nats|http, to be
// mounted at "/call/" (or under http.StripPrefix): the reply is the
// function's body, unchanged, with status 200. Errors are JSON
// {"error":"..."}: 400 bad input, 404 unknown function or via, 405 not POST,
// 413 body over the limit, 502 runtime unreachable, 504 timeout.
//
// A Caller is safe for concurrent use. Close releases its idle connections.
type Caller struct {
	nc         *nats.Conn
	timeout    time.Duration
	limits     Limits
	defaultVia string
	client     *http.Client
	ownClient  bool
	subjects   map[string]string // fn → NATS subject
	urls       map[string]string // fn → runtime URL
	log        zerolog.Logger
	bufs       bodyPool
	m          *metrics.RPC // nil: no metrics
}

// NewCaller returns a Caller for cfg.
func NewCaller(cfg CallerConfig) *Caller {
	c := &Caller{
		nc:         cfg.NC,
		timeout:    cfg.Timeout,
		limits:     cfg.Limits.withDefaults(),
		defaultVia: cfg.DefaultVia,
		m:          cfg.Metrics.RPC(),
		client:     cfg.HTTPClient,
		subjects:   make(map[string]string, 3),
		log: cfg.Logger.With().Str("component", "rpc-caller").Logger().
			Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultCallTimeout
	}
	if c.defaultVia == "" {
		c.defaultVia = ViaNATS
	}
	if c.client == nil {
		c.client = newPooledClient()
		c.ownClient = true
	}
	for _, fn := range Functions() {
		c.subjects[fn] = Subject(cfg.SubjectPrefix, fn)
	}
	if base := strings.TrimRight(cfg.RuntimeHTTP, "/"); base != "" {
		c.urls = make(map[string]string, 3)
		for _, fn := range Functions() {
			c.urls[fn] = base + "/rpc/" + fn
		}
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
// reply may alias body. It fails with an *Error: 404 for an unknown fn or via,
// 413 for a body over the limit, the runtime's own error (400) for bad input,
// 502 when no runtime is reachable, 504 when the call timed out, and 499
// when ctx was cancelled first.
func (c *Caller) Call(ctx context.Context, via, fn string, body []byte) ([]byte, error) {
	if c.m == nil {
		return c.call(ctx, via, fn, body)
	}
	start := time.Now()
	out, err := c.call(ctx, via, fn, body)
	c.m.Called(fn, via, statusOf(err), time.Since(start))
	return out, err
}

func (c *Caller) call(ctx context.Context, via, fn string, body []byte) ([]byte, error) {
	if !knownFunction(fn) {
		return nil, unknownFunction(fn)
	}
	switch via {
	case ViaDirect:
		return c.limits.Call(fn, body)
	case ViaNATS, ViaHTTP:
	default:
		return nil, errorf(http.StatusNotFound, "unknown via %q (want direct, nats or http)", via)
	}
	if len(body) > c.limits.MaxPayload {
		return nil, tooLarge(len(body), c.limits.MaxPayload)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if via == ViaNATS {
		return c.callNATS(ctx, fn, body)
	}
	return c.callHTTP(ctx, fn, body)
}

func (c *Caller) callNATS(ctx context.Context, fn string, body []byte) ([]byte, error) {
	if c.nc == nil {
		return nil, errorf(http.StatusBadGateway, "nats delegation is not configured on this caller")
	}
	subject := c.subjects[fn]
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
		return nil, &Error{Code: n, Message: desc}
	}
	return msg.Data, nil
}

func (c *Caller) callHTTP(ctx context.Context, fn string, body []byte) ([]byte, error) {
	url, ok := c.urls[fn]
	if !ok {
		return nil, errorf(http.StatusBadGateway, "http delegation is not configured on this caller")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("rpc: build runtime request: %w", err)
	}
	req.Header["Content-Type"] = []string{"application/octet-stream"}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, c.delegationError(ctx, "http", url, err)
	}
	defer resp.Body.Close()
	// A reply is at most a few times the request (transform escapes), so
	// bound it generously rather than trusting the runtime blindly.
	limit := int64(8*c.limits.MaxPayload + 4096)
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
		return nil, &Error{Code: resp.StatusCode, Message: errorMessage(out, resp.Status)}
	}
	return out, nil
}

// errorMessage extracts "error" from a {"error":"..."} body, or returns
// fallback.
func errorMessage(b []byte, fallback string) string {
	s := jsonScanner{b: b}
	s.ws()
	if s.peek() != '{' {
		return fallback
	}
	s.i++
	for {
		s.ws()
		if s.peek() != '"' {
			return fallback
		}
		key, esc, err := s.rawString()
		if err != nil {
			return fallback
		}
		key = decodeString(key, esc)
		s.ws()
		if s.peek() != ':' {
			return fallback
		}
		s.i++
		s.ws()
		if string(key) == "error" && s.peek() == '"' {
			raw, esc, err := s.rawString()
			if err != nil {
				return fallback
			}
			return string(decodeString(raw, esc))
		}
		if err := s.skipValue(0); err != nil {
			return fallback
		}
		s.ws()
		if s.peek() != ',' {
			return fallback
		}
		s.i++
	}
}

// delegationError maps a failed delegation to 502 (unreachable) or 504
// (timed out), or 499 when the caller's own context was cancelled.
func (c *Caller) delegationError(ctx context.Context, via, target string, err error) *Error {
	var e *Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || isTimeout(err):
		e = errorf(http.StatusGatewayTimeout, "runtime did not answer %s within %s", target, c.timeout)
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		e = errorf(statusClientClosed, "call cancelled: %v", err)
	case errors.Is(err, nats.ErrNoResponders):
		e = errorf(http.StatusBadGateway, "no runtime instance is serving %s", target)
	case errors.Is(err, nats.ErrMaxPayload):
		e = errorf(http.StatusRequestEntityTooLarge, "payload is over the NATS server's max payload")
	default:
		e = errorf(http.StatusBadGateway, "runtime unreachable over %s (%s): %v", via, target, err)
	}
	if e.Code >= 500 {
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
		writeError(w, errorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method))
		return
	}
	via := c.defaultVia
	if r.URL.RawQuery != "" {
		if v := r.URL.Query().Get("via"); v != "" {
			via = v
		}
	}
	if !knownFunction(fn) {
		writeError(w, unknownFunction(fn))
		return
	}
	buf, rerr := c.bufs.read(w, r, c.limits.MaxPayload)
	if rerr != nil {
		writeError(w, rerr)
		return
	}
	defer buf.release()
	out, err := c.Call(r.Context(), via, fn, buf.b)
	if err != nil {
		e := AsError(err)
		if e.Code == statusClientClosed {
			return // nobody is listening
		}
		writeError(w, e)
		return
	}
	writeReply(w, fn, out)
}
