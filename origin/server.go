package origin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Sentinel errors.
var (
	// ErrServerClosed is returned by calls made after Shutdown began.
	ErrServerClosed = errors.New("origin: server closed")
	// ErrUnknownContinuation is returned for a continuation name that was
	// never registered.
	ErrUnknownContinuation = errors.New("origin: unknown continuation")
)

// ResultToClient is the name of the default continuation: it pushes the
// result (or error) frame to the WebSocket client that asked for the fetch.
const ResultToClient = "ws.result"

// Version is the protocol version announced in hello frames.
const Version = "0.1.0"

// Config configures an origin. Zero values take the defaults named on each
// field (DefaultConfig has them all). The fields with a yaml tag are the
// `origin` section of the configuration file.
type Config struct {
	// ID is the origin id; it names the results subject and consumer.
	// Default "o1".
	ID string `yaml:"id"`
	// Listen is the HTTP/WebSocket listen address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// Subjects derives subject names. Default prefix "pipeline".
	Subjects broker.Subjects `yaml:"-"`
	// MaxFrameBytes is the largest client frame handled; larger frames get a
	// too_large error. Default 2 MiB.
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// HardFrameBytes is the frame size beyond which the connection is closed
	// with code 1009 (it cannot be skipped cheaply). Default 4 × MaxFrameBytes.
	HardFrameBytes int `yaml:"hard_frame_bytes"`
	// MaxBodyBytes caps a start-fetch request body. Default 1 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxTimeoutMS caps timeout_ms. Default 300,000 (5 minutes).
	MaxTimeoutMS int64 `yaml:"max_timeout_ms"`
	// MaxInFlight caps unfinished fetches per connection; beyond it a
	// start-fetch gets queue_full. Default 1024.
	MaxInFlight int `yaml:"max_in_flight"`
	// RatePerConn caps start-fetch frames per second per connection (token
	// bucket, burst RateBurst); beyond it a start-fetch gets queue_full.
	// 0 means no rate limit.
	RatePerConn float64 `yaml:"rate_per_conn"`
	// RateBurst is the token bucket size. Default max(1, RatePerConn).
	RateBurst int `yaml:"rate_burst"`
	// SendQueue is the number of frames buffered for a slow client before the
	// connection is closed. Default 4 × MaxInFlight.
	SendQueue int `yaml:"send_queue"`
	// SendQueueBytes bounds the bytes buffered for one client. Past half of
	// it (or of SendQueue) the origin stops reading that client's frames
	// until the client has read its replies; a client whose queue is full
	// (it does not read) is closed with 1008, and its results stay available
	// with get-result. Default 8 MiB.
	SendQueueBytes int `yaml:"send_queue_bytes"`
	// MaxConnections caps open WebSocket sessions; beyond it an upgrade is
	// refused with HTTP 503 before any WebSocket work. Default 50,000.
	MaxConnections int `yaml:"max_connections"`
	// WriteTimeout bounds one frame write. Default 10 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// PublishTimeout bounds storing a job. Default 5 s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// DedupWindow is how long finished job ids are remembered to suppress
	// duplicate results. Default 10 minutes.
	DedupWindow time.Duration `yaml:"dedup_window"`
	// KeyWindow is the jobs stream's key window (broker.StreamsConfig
	// KeyWindow): how long a start-fetch key names its job. Default 10
	// minutes.
	KeyWindow time.Duration `yaml:"-"`
	// Replicas for the origin's results consumer (3 on a cluster). Default 1.
	Replicas int `yaml:"-"`
	// ResultAckWait is how long a result delivered to this origin may stay
	// unacknowledged (e.g. the origin crashed) before it is redelivered; it
	// also bounds one continuation run. Default broker.DefaultAckWait.
	ResultAckWait time.Duration `yaml:"-"`
	// ResultRetention is the results stream's retention
	// (broker.StreamsConfig.FinishedTTL): negative means finished results
	// are not kept, and get-result is refused. Default (0): kept.
	ResultRetention time.Duration `yaml:"-"`
	// OwnAccount, when non-nil, says the origin is alone in its own NATS
	// account (nats.auth on, broker.OriginAccount): it binds its results
	// consumer, which the admin provisioned in the pipeline account, through
	// the imported API under broker.PipelineAPIPrefix instead of creating
	// it, reads its finished results from the results stream by direct get
	// under the same prefix, and keeps its delayed-jobs stream in its own
	// account, created at Start and sized by *OwnAccount
	// (broker.ProvisionDelayed). Nil: one shared account, as without auth.
	OwnAccount *broker.StreamsConfig `yaml:"-"`
	// AuthToken, when set, is required as a bearer token on /ws and the
	// extra handlers (Authorization: Bearer <token>, or ?access_token= for
	// browsers). A WebSocket request without it, or with a wrong header, is
	// refused with 401 before the upgrade; only a wrong ?access_token= is
	// upgraded and refused with one unauthorized error frame (a browser
	// cannot read a handshake's status). HTTP requests get 401. Refusals are
	// logged at most once per 10 s.
	AuthToken string `yaml:"auth_token"`
	// AllowedOrigins lists the browser origins (scheme://host[:port]) allowed
	// to open a WebSocket; "*" allows any. Empty: only pages served from the
	// configured Listen host and port (never judged by the request's Host
	// header; a Listen host of 0.0.0.0 then allows no browser). Requests
	// without an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// RefusalLimits close, at accept, the connections of a source address
	// that had too many auth refusals lately (refusals.go).
	RefusalLimits `yaml:",inline"`
	// Handlers are extra HTTP routes served next to /ws (e.g. "/metrics").
	Handlers map[string]http.Handler `yaml:"-"`
	// Call configures the /call/<fn> caller the origin serves (behind
	// AuthToken like Handlers); see CallConfig. Its Subjects, Logger and
	// Metrics are the origin's.
	Call CallConfig `yaml:"-"`
	// Metrics, when set, receives the origin's metrics (connections, fetch
	// outcomes, phase latencies, ...). Default: none. Serving them is up to
	// the caller (e.g. a "/metrics" entry in Handlers).
	Metrics *metrics.Metrics `yaml:"-"`
	// Logger receives one line per notable event. Default: discard.
	Logger zerolog.Logger `yaml:"-"`
}

// DefaultConfig returns the origin settings with every default filled in.
// The refusal limits are the settings whose zero value is not their default
// (0 turns the limit off): it sets DefaultRefusalsPerSource, and exempts
// loopback.
func DefaultConfig() Config {
	c := Config{}.withDefaults()
	c.RefusalsPerSource = DefaultRefusalsPerSource
	c.RefusalExempt = defaultRefusalExempt()
	return c
}

func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = "o1"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 2 << 20
	}
	if c.HardFrameBytes <= 0 {
		c.HardFrameBytes = 4 * c.MaxFrameBytes
	}
	if c.HardFrameBytes < c.MaxFrameBytes {
		c.HardFrameBytes = c.MaxFrameBytes
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxTimeoutMS <= 0 {
		c.MaxTimeoutMS = 300_000
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1024
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 4 * c.MaxInFlight
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 8 << 20
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 50_000
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.ResultAckWait <= 0 {
		c.ResultAckWait = broker.DefaultAckWait
	}
	if c.KeyWindow <= 0 {
		c.KeyWindow = broker.DefaultStreamsConfig().KeyWindow
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 10 * time.Minute
	}
	c.RefusalLimits = c.RefusalLimits.withDefaults()
	return c
}

// ContinuationFunc runs when a job's result arrives. It runs on the results
// delivery goroutine and should return quickly (start a goroutine for slow
// work). Returning an error makes the result be delivered again later; a nil
// return means the continuation ran, and it is never run again for that job.
type ContinuationFunc func(ctx context.Context, res *broker.Result) error

// Server is an origin: WebSocket sessions, job enqueueing and result
// continuations. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	// pjs reaches the pipeline account's JetStream API: js itself, or with
	// OwnAccount the API its account imports under broker.PipelineAPIPrefix.
	pjs    jetstream.JetStream
	log    zerolog.Logger
	limits limits

	upgrader websocket.Upgrader
	httpSrv  *http.Server
	ln       net.Listener

	contMu sync.RWMutex
	conts  map[string]ContinuationFunc

	sessMu   sync.Mutex
	sessions map[string]*session
	// fullLog and authLog pace the log lines of refused upgrades (at
	// max_connections) and of refused tokens.
	fullLog, authLog logging.Every
	// refusals closes blocked sources' connections at accept; nil: off.
	refusals *refusalLimiter
	// inflight indexes accepted jobs without a result (get-result: pending).
	inflight inflight
	// pingStop ends pingLoop.
	pingStop chan struct{}
	// writers are the sessions' buffered writers, held only while writing.
	writers sync.Pool
	sessWG  sync.WaitGroup
	// bg counts background goroutines (a cancel's store wait, the listing
	// of keyed jobs); bgCtx ends them at Shutdown.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc

	dedup    *dedup
	finished *finished
	lanes    []jetstream.ConsumeContext // results consumers: small, bulk
	dueCC    jetstream.ConsumeContext   // moves due delayed jobs (delayed.go)
	delayed  jetstream.Stream           // the delayed-jobs stream, bound at Start
	cancels  cancels
	closing  atomic.Bool
	serveErr chan error

	caller    *Caller
	m         *Metrics // nil: no metrics
	ready     *metrics.Readiness
	untrackIF func()

	// delayMu guards the delayed-jobs stream's size estimate (delayed.go).
	delayMu               sync.Mutex
	delayChecked          time.Time
	delayUsed, delayLimit int64
	// prior are the key-named jobs finished before a (re)start (keyed.go).
	prior priorKeys

	// Counters, for tests and metrics.
	duplicates atomic.Int64
	enqueued   atomic.Int64
	finishedN  atomic.Int64
}

// New returns an origin using nc. Register continuations, then Start.
func New(nc *nats.Conn, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := broker.ValidateToken("origin id", cfg.ID); err != nil {
		return nil, fmt.Errorf("new origin: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout), jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("new origin: jetstream: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		nc:       nc,
		js:       js,
		log:      cfg.Logger.With().Str("component", "origin").Str("origin", cfg.ID).Logger(),
		limits:   limits{maxBody: cfg.MaxBodyBytes, maxTimeoutMS: cfg.MaxTimeoutMS, maxURL: 8192, maxHeaders: 64},
		conts:    make(map[string]ContinuationFunc),
		sessions: make(map[string]*session),
		dedup:    newDedup(cfg.DedupWindow, 1_000_000),
		finished: newFinished(nc, cfg.Subjects, cfg.ID, jsAPIPrefix(cfg), cfg.ResultRetention >= 0),
		serveErr: make(chan error, 1),
		m:        MetricsOf(cfg.Metrics),
	}
	if s.refusals, err = newRefusalLimiter(cfg, s.log, s.m); err != nil {
		return nil, fmt.Errorf("new origin: %w", err)
	}
	// Its own results consumer rather than the results stream: that is
	// what an origin's NATS permissions let it read (broker.OriginPermissions).
	rcfg := metrics.ReadinessConfig{
		Conns: []*nats.Conn{nc}, JS: js, Streams: []string{broker.JobsStream},
		Consumers: []metrics.ConsumerRef{
			{Stream: broker.ResultsStream, Consumer: broker.OriginConsumer(cfg.ID)},
			{Stream: broker.ResultsStream, Consumer: broker.OriginBulkConsumer(cfg.ID)},
		},
	}
	s.pjs = js
	if cfg.OwnAccount != nil {
		// In its own account it sees the pipeline account only through its
		// imports: its results consumer, not the jobs stream.
		if s.pjs, err = jetstream.NewWithAPIPrefix(nc, broker.PipelineAPIPrefix); err != nil {
			return nil, fmt.Errorf("new origin: jetstream: %w", err)
		}
		rcfg.JS, rcfg.Streams = s.pjs, nil
	}
	ready, err := metrics.NewReadiness(rcfg)
	if err != nil {
		return nil, fmt.Errorf("new origin: %w", err)
	}
	s.ready = ready
	s.untrackIF = s.m.TrackInFlight(s.pendingFetches)
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.upgrader = websocket.Upgrader{
		// Small: an idle session holds it. Larger frames are read straight
		// into the session's frame buffer.
		ReadBufferSize: 256,
		// Sessions frame their writes themselves (wswriter.go); gorilla's
		// write buffer is used only for the rare control frames it writes,
		// so it comes from a pool instead of being held by every session.
		WriteBufferPool: &sync.Pool{},
	}
	s.upgrader.CheckOrigin = s.checkOrigin
	s.writers.New = func() any { return bufio.NewWriterSize(nil, writeBatchBytes) }
	s.pingStop = make(chan struct{})
	s.conts[ResultToClient] = s.resultToClient
	cc := cfg.Call
	cc.Subjects, cc.Logger, cc.Metrics = cfg.Subjects, cfg.Logger, cfg.Metrics
	s.caller = NewCaller(nc, cc)
	return s, nil
}

// Pull sizes of the two results lanes. The small lane's is bounded by
// bytes (hundreds of small results; a large one from an executor of an
// older version fits too). The bulk lane's is bounded by count: its
// results are all large, and a count cannot stall on a message larger than
// the bytes left in a pull, as a byte bound close to the message size can.
// Two keep what is already on its way down the connection ahead of a
// small result to a few MiB at the default body cap.
const (
	resultsPullBytes = 8 << 20
	bulkPullMessages = 2
)

// jsAPIPrefix is where this origin's connection reaches the pipeline
// account's JetStream API: its own account sees it under
// broker.PipelineAPIPrefix (only what it imports).
func jsAPIPrefix(cfg Config) string {
	if cfg.OwnAccount != nil {
		return broker.PipelineAPIPrefix
	}
	return "$JS.API"
}

// bindResults binds results consumer name (a lane's), which the admin
// provisioned in the pipeline account (OwnAccount). In a cluster, a request crossing accounts
// right after connecting can go unanswered (observed once in a loaded R3
// test), so each attempt is short and it tries again until ctx ends; a
// consumer that does not exist fails at once.
func (s *Server) bindResults(ctx context.Context, name string) (jetstream.Consumer, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err := s.pjs.Consumer(actx, broker.ResultsStream, name)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return cons, err
		}
		s.log.Debug().Err(err).Int("attempt", attempt).Msg("bind results consumer: trying again")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (after %d attempts)", err, attempt)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ID is the origin id.
func (s *Server) ID() string { return s.cfg.ID }

// Register adds a named continuation. Names must be registered before results
// for them arrive, so register before Start (also after a restart: the name
// and state travel with the job).
func (s *Server) Register(name string, fn ContinuationFunc) error {
	if name == "" || fn == nil {
		return fmt.Errorf("register continuation: empty name or nil func")
	}
	s.contMu.Lock()
	defer s.contMu.Unlock()
	if _, dup := s.conts[name]; dup {
		return fmt.Errorf("register continuation %q: already registered", name)
	}
	s.conts[name] = fn
	return nil
}

// Start provisions this origin's results consumer, starts consuming results
// and starts serving HTTP on cfg.Listen. It returns once the listener is
// bound; Addr tells where. After Shutdown it returns ErrServerClosed.
func (s *Server) Start(ctx context.Context) error {
	if s.closing.Load() {
		// Its results channel is closed: consuming again would panic.
		return ErrServerClosed
	}
	// Two lanes, each read through its own consumer: small results and
	// large ones (broker.BulkResultOf), so that a small result never waits
	// behind large ones.
	var lanes []jetstream.Consumer
	if s.cfg.OwnAccount != nil {
		// The admin provisions them (broker.StreamsConfig.Tenants): an origin
		// that could write a consumer config could point its delivery anywhere.
		for _, name := range []string{broker.OriginConsumer(s.cfg.ID), broker.OriginBulkConsumer(s.cfg.ID)} {
			cons, err := s.bindResults(ctx, name)
			if err != nil {
				return fmt.Errorf("origin %s: results consumer %s (provisioned by the admin for the origins in nats.auth.origins): %w",
					s.cfg.ID, name, err)
			}
			lanes = append(lanes, cons)
		}
	} else {
		for _, cfg := range broker.OriginConsumerConfigs(s.cfg.Subjects, s.cfg.ID, s.cfg.Replicas, s.cfg.ResultAckWait) {
			cons, err := s.js.CreateOrUpdateConsumer(ctx, broker.ResultsStream, cfg)
			if err != nil {
				return fmt.Errorf("origin %s: results consumer %s: %w", s.cfg.ID, cfg.Durable, err)
			}
			lanes = append(lanes, cons)
		}
		// Executors pull each origin's jobs through its own consumer and
		// take turns between origins; creating it now lets them follow this
		// origin before its first job. If it fails (a store provisioned by
		// an older version, or permissions that leave consumers to the
		// admin, whose refusal is only a timeout: hence the short one),
		// executors still find the jobs within their discovery interval. In
		// its own account the admin provisions it with the results consumer.
		jctx, jcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := broker.EnsureJobsConsumer(jctx, s.js, s.cfg.Subjects, s.cfg.ID)
		jcancel()
		if err != nil {
			s.log.Warn().Err(err).Msg("jobs consumer not created; executors find this origin's jobs on their next discovery")
		}
	}
	if s.cfg.OwnAccount != nil {
		if err := broker.ProvisionDelayed(ctx, s.js, *s.cfg.OwnAccount); err != nil {
			return fmt.Errorf("origin %s: own delayed-jobs stream: %w", s.cfg.ID, err)
		}
	}
	if err := s.startMover(ctx); err != nil {
		return err
	}
	if !s.finished.enabled() {
		s.log.Warn().Msg("result retention disabled: no get-result, de-duplication across restarts only within one process")
	}
	ln, err := listenTCP(ctx, s.cfg.Listen)
	if err != nil {
		s.dueCC.Stop()
		return fmt.Errorf("origin %s: %w", s.cfg.ID, err)
	}
	// The bulk lane pulls a few at a time: its messages share this
	// connection with the small lane's.
	for i, cons := range lanes {
		var pull jetstream.PullConsumeOpt = jetstream.PullMaxBytes(resultsPullBytes)
		if i == 1 {
			pull = jetstream.PullMaxMessages(bulkPullMessages)
		}
		cc, err := cons.Consume(s.onResult, append(broker.PullOptions(), pull,
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) {
					s.log.Debug().Err(err).Msg("results consume")
				}
			}))...)
		if err != nil {
			for _, cc := range s.lanes {
				cc.Stop()
			}
			ln.Close()
			s.dueCC.Stop()
			return fmt.Errorf("origin %s: consume results: %w", s.cfg.ID, err)
		}
		s.lanes = append(s.lanes, cc)
	}
	s.prior.recon = s.nc.Stats().Reconnects
	s.prior.until = time.Now().Add(s.cfg.KeyWindow)
	s.loadPriorKeys(s.prior.recon)
	ln = s.refusals.listener(ln) // closes blocked sources' connections at accept
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.serveReady)
	mux.Handle("/call/", s.requireAuth(s.caller))
	for pattern, h := range s.cfg.Handlers {
		mux.Handle(pattern, s.requireAuth(h))
	}
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("http serve")
			s.serveErr <- err
		}
	}()
	s.sessWG.Add(1)
	go s.pingLoop()
	s.log.Info().Str("listen", "ws://"+ln.Addr().String()+"/ws").Str("results", s.cfg.Subjects.Result(s.cfg.ID)).Msg("origin listening")
	return nil
}

// pingLoop asks every session's writer for a ping every pingEvery, so that
// connections stay alive through proxies and dead peers are noticed. One
// loop for all sessions: an idle session has no writer goroutine of its own.
func (s *Server) pingLoop() {
	defer s.sessWG.Done()
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-s.pingStop:
			return
		case <-t.C:
		}
		s.sessMu.Lock()
		for _, sess := range s.sessions {
			sess.pingDue.Store(true)
			sess.wake()
		}
		s.sessMu.Unlock()
	}
}

// Addr is the bound listen address (host:port), valid after Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Err reports a fatal serving error, if the HTTP server failed.
func (s *Server) Err() <-chan error { return s.serveErr }

// serveReady answers /readyz: 200 while the origin accepts work, its NATS
// connection is up, and the jobs stream and its results consumer are
// reachable (checked at most once a second); 503 with the reason otherwise.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		metrics.WriteReady(w, ErrServerClosed)
		return
	}
	metrics.WriteReady(w, s.ready.Check(r.Context()))
}

// ProxyFetch stores a fetch job whose result runs the continuation registered
// as name with state (marshaled to JSON). It returns the job id once
// JetStream has stored the job. Errors: ErrUnknownContinuation,
// ErrServerClosed, broker.ErrQueueFull, or a wrapped publish error.
func (s *Server) ProxyFetch(ctx context.Context, req FetchRequest, name string, state any) (string, error) {
	if err := checkURL(req.URL, s.limits.maxURL); err != nil {
		return "", err
	}
	var raw json.RawMessage
	if state != nil {
		b, err := json.Marshal(state)
		if err != nil {
			return "", fmt.Errorf("proxy fetch: encode state: %w", err)
		}
		raw = b
	}
	job := s.newJob(req, "", broker.Continuation{Name: name, State: raw}, time.Now())
	fut, err := s.publish(job)
	if err != nil {
		return "", err
	}
	select {
	case <-fut.Ok():
		return job.ID, nil
	case err := <-fut.Err():
		return "", s.publishErr(err)
	case <-ctx.Done():
		return "", fmt.Errorf("proxy fetch: %w", ctx.Err())
	}
}

func (s *Server) newJob(req FetchRequest, clientID string, cont broker.Continuation, received time.Time) *broker.Job {
	id := nuid.Next()
	if req.Key != "" {
		id = broker.KeyJobID(req.Key)
	}
	return &broker.Job{
		ID:           id,
		DelayMS:      req.Delay.Milliseconds(),
		Origin:       s.cfg.ID,
		ClientID:     clientID,
		URL:          req.URL,
		Method:       req.Method,
		Headers:      req.Headers,
		Body:         req.Body,
		TimeoutMS:    req.TimeoutMS,
		Retry:        req.Retry,
		ReceivedAt:   received.UnixNano(),
		Continuation: cont,
		// This origin reads its bulk lane: large results go there.
		BulkLane: true,
	}
}

// publish stores job asynchronously; the future reports the PubAck.
func (s *Server) publish(job *broker.Job) (jetstream.PubAckFuture, error) {
	if s.closing.Load() {
		return nil, ErrServerClosed
	}
	s.contMu.RLock()
	_, ok := s.conts[job.Continuation.Name]
	s.contMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownContinuation, job.Continuation.Name)
	}
	data, err := job.Encode()
	if err != nil {
		return nil, err
	}
	var fut jetstream.PubAckFuture
	if job.DelayMS > 0 {
		due := time.Unix(0, job.ReceivedAt).Add(time.Duration(job.DelayMS) * time.Millisecond)
		fut, err = s.js.PublishMsgAsync(broker.DelayedJobMsg(s.cfg.Subjects, s.cfg.ID, job.ID, data, due))
	} else {
		fut, err = s.js.PublishAsync(s.cfg.Subjects.Job(s.cfg.ID), data, jetstream.WithMsgID(broker.JobMsgID(s.cfg.ID, job.ID)))
	}
	if err != nil {
		return nil, s.publishErr(err)
	}
	return fut, nil
}

func (s *Server) publishErr(err error) error {
	if broker.CodeOf(err) == broker.CodeQueueFull {
		return fmt.Errorf("store job: %w", broker.ErrQueueFull)
	}
	return fmt.Errorf("store job: %w", err)
}

// onResult runs on the results consumer's delivery goroutine. A result's
// continuation runs at most once per job within this process's dedup
// window (the in-memory set catches redeliveries and duplicates), and
// across an origin crash unless the crash falls between the continuation's
// end and its ack reaching the server: the ack follows the continuation at
// once, with no store write in between (the result message is the job's
// finished record).
func (s *Server) onResult(msg jetstream.Msg) {
	res, err := broker.DecodeResult(msg.Data())
	if err != nil {
		s.log.Error().Err(err).Msg("undecodable result; dropping it")
		_ = msg.Term()
		return
	}
	if !s.dedup.begin(res.JobID, generation(res)) {
		s.suppress(msg, res)
		return
	}
	s.contMu.RLock()
	fn := s.conts[res.Continuation.Name]
	s.contMu.RUnlock()
	if fn == nil {
		s.dedup.abort(res.JobID)
		s.log.Error().Str("job", res.JobID).Str("continuation", res.Continuation.Name).Msg("no continuation registered under this name; result kept for later")
		_ = msg.NakWithDelay(10 * time.Second)
		return
	}
	if res.Continuation.Name == ResultToClient {
		// The built-in continuation only queues a frame: no deadline (a
		// timer per result) to bound it.
		err = fn(s.bgCtx, res)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ResultAckWait)
		err = fn(ctx, res)
		cancel()
	}
	if err != nil {
		s.dedup.abort(res.JobID)
		s.log.Warn().Err(err).Str("job", res.JobID).Str("continuation", res.Continuation.Name).Msg("continuation failed; will retry")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	s.dedup.finish(res.JobID)
	s.finishJob(res)
	s.finishedN.Add(1)
	s.m.ExecutorSeen(res.Executor)
	if s.finished.enabled() && strings.HasSuffix(msg.Subject(), "."+broker.LegacyResultToken) {
		// Published on the plain results subject: this message is not
		// under the job's subject, so it cannot be the job's finished
		// record. Store a copy there (the one extra write of that path),
		// then acknowledge.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
		_, err := s.finished.store(ctx, s.js, res, msg.Data())
		cancel()
		if err != nil {
			s.log.Warn().Err(err).Str("job", res.JobID).Msg("finished result not stored; get-result will not find it")
		}
	}
	// The result message itself is the finished record: acknowledging it
	// is the only write left (a crash before the ack reaches the server
	// runs the continuation again; within this process the in-memory
	// record suppresses a redelivery).
	_ = msg.Ack()
}

// generation tells apart jobs under one id: only a key's job id
// (broker.KeyJobID) names a new job when the key is used again after the key
// window; such jobs differ by when their request came. Server-named ids are
// never reused: every result under one is the same job's.
func generation(res *broker.Result) int64 {
	if broker.IsKeyJobID(res.JobID) {
		return res.ReceivedAt
	}
	return 0
}

func (s *Server) suppress(msg jetstream.Msg, res *broker.Result) {
	if res.Executor == "" && res.Error != nil && res.Error.Code == broker.CodeCanceled {
		_ = msg.Ack() // this origin's own record of a cancel, coming back
		return
	}
	s.duplicates.Add(1)
	s.m.Duplicate()
	s.log.Debug().Str("job", res.JobID).Int("attempt", res.Attempt).Msg("duplicate result suppressed")
	_ = msg.Ack()
}

// clientState is the default continuation's state.
type clientState struct {
	Session string `json:"s"`
}

// resultToClient is the default continuation: it writes the final frame to
// the session that asked, and keeps it for get-result.
func (s *Server) resultToClient(_ context.Context, res *broker.Result) error {
	var st clientState
	if len(res.Continuation.State) > 0 {
		if err := json.Unmarshal(res.Continuation.State, &st); err != nil {
			return nil // malformed state can never succeed; don't retry
		}
	}
	s.sessMu.Lock()
	sess := s.sessions[st.Session]
	s.sessMu.Unlock()
	if sess == nil {
		s.log.Debug().Str("job", res.JobID).Msg("client gone; result kept for get-result")
		return nil
	}
	sess.deliver(res)
	return nil
}

// Shutdown stops accepting connections and fetches, waits (until ctx ends)
// for in-flight fetches to deliver their results, then closes every session
// and stops consuming results. It returns ctx's error if the wait was cut
// short.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.CompareAndSwap(false, true) {
		return ErrServerClosed
	}
	var firstErr error
	if s.httpSrv != nil {
		// Stops the listener; hijacked WebSocket connections are ours to close.
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			firstErr = fmt.Errorf("origin shutdown: http: %w", err)
		}
	}
	// Drain: wait for results of accepted fetches.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.pendingFetches() > 0 {
		select {
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("origin shutdown: %d fetches still in flight: %w", s.pendingFetches(), ctx.Err())
			}
			goto closeSessions
		case <-tick.C:
		}
	}
closeSessions:
	close(s.pingStop)
	s.sessMu.Lock()
	for _, sess := range s.sessions {
		sess.close(websocket.CloseGoingAway, "origin shutting down")
	}
	s.sessMu.Unlock()
	s.sessWG.Wait()
	if s.dueCC != nil {
		s.dueCC.Stop()
	}
	for _, cc := range s.lanes {
		cc.Drain()
	}
	for _, cc := range s.lanes {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			cc.Stop()
		}
	}
	if len(s.lanes) > 0 {
		// No more deliveries: make sure the acks of what was handled
		// reached the server (an ack is the only record that a
		// continuation ran).
		if err := s.nc.FlushWithContext(ctx); err != nil {
			s.log.Warn().Err(err).Msg("flushing the last result acks")
		}
	}
	s.bgCancel()
	s.bg.Wait()
	s.untrackIF()
	s.caller.Close()
	s.log.Info().Int64("finished", s.finishedN.Load()).Int64("duplicates", s.duplicates.Load()).Msg("origin stopped")
	return firstErr
}

func (s *Server) pendingFetches() int {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	n := 0
	for _, sess := range s.sessions {
		n += sess.inFlight()
	}
	return n
}

// Stats is a snapshot of origin counters.
type Stats struct {
	Sessions   int
	Enqueued   int64
	Finished   int64
	Duplicates int64
}

// Stats returns current counters.
func (s *Server) Stats() Stats {
	s.sessMu.Lock()
	n := len(s.sessions)
	s.sessMu.Unlock()
	return Stats{Sessions: n, Enqueued: s.enqueued.Load(), Finished: s.finishedN.Load(), Duplicates: s.duplicates.Load()}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
