package runtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// Service identity defaults.
const (
	// ServiceName is the micro service name, shown by `nats micro ls`.
	ServiceName = "runtime"
	// Version is the default service version.
	Version = "0.1.0"
)

// Config configures a Service. The zero value works.
type Config struct {
	// Registry holds the functions served, one endpoint each. If nil,
	// NewRegistry(Limits{}) is used (the built-ins with default limits).
	// Starting the Service seals it (see Registry).
	Registry *Registry
	// Subjects derives the endpoint subjects: <prefix>.rpc.<fn>. The zero
	// value uses broker.DefaultPrefix ("pipeline").
	Subjects broker.Subjects
	// Version is the micro service version (SemVer). If empty, Version is used.
	Version string
	// Workers is the number of goroutines running functions. If zero or
	// negative, runtime.GOMAXPROCS(0) is used.
	Workers int
	// QueueSize is how many received requests may wait for a worker before
	// the endpoint subscriptions stop reading (back-pressure then builds up
	// in the subscription's pending buffer). If zero or negative, 64 per
	// worker is used.
	QueueSize int
	// Metadata is added to the service's micro metadata.
	Metadata map[string]string
	// Logger receives errors and lifecycle events. The zero value discards them.
	Logger zerolog.Logger
	// Metrics, when set, counts the served calls
	// (pipeline_rpc_served_total{via="nats"}). Default: none.
	Metrics *metrics.Metrics
}

// semver is the version syntax micro accepts (semver.org's regular
// expression), checked in New so that Start does not fail on it.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// Service is the "runtime" NATS micro service: one endpoint
// <prefix>.rpc.<fn> per registered function, all in queue group
// broker.RPCQueueGroup, so that any number of Services (in one process or
// many) share the requests. A micro endpoint delivers its requests one at a
// time, so the Service hands each to a bounded pool of worker goroutines
// that run the function and publish the reply: one process uses all its
// cores.
//
// Create it with New, then Start; Shutdown stops it for good. Its methods
// are safe for concurrent use.
type Service struct {
	nc      *nats.Conn
	cfg     Config
	reg     *Registry
	log     zerolog.Logger
	m       *servedMetrics // nil: no metrics
	workerN int

	lifeMu  sync.Mutex // guards started, stopped, svc, stopErr
	started bool
	stopped bool
	svc     micro.Service
	stopErr error

	mu     sync.RWMutex // guards closed against the send on jobs
	closed bool
	jobs   chan job
	// workCtx is passed to the functions; cancelled when Shutdown runs out
	// of time.
	workCtx    context.Context
	cancelWork context.CancelFunc
	workers    sync.WaitGroup

	stats map[string]*endpointStats // by function; read-only after Start
}

// job is one received request waiting for a worker.
type job struct {
	fn    string
	data  []byte
	reply string
	stats *endpointStats
}

// endpointStats are the per-endpoint numbers kept by the Service itself. The
// micro framework's own counters see only the hand-off to the worker pool:
// its num_requests is right, but its processing time is the hand-off time and
// its num_errors stays 0. These numbers are the real ones and appear in
// each endpoint's "data" in $SRV.STATS.
type endpointStats struct {
	requests   atomic.Int64
	errors     atomic.Int64
	processing atomic.Int64 // nanoseconds spent in the function and the reply
	lastError  atomic.Pointer[string]
}

// EndpointData is the "data" object of each endpoint in $SRV.STATS replies
// (`nats micro stats runtime`): the request count, errors and processing
// time measured by the worker pool.
type EndpointData struct {
	Workers               int           `json:"workers"`
	NumRequests           int64         `json:"num_requests"`
	NumErrors             int64         `json:"num_errors"`
	LastError             string        `json:"last_error,omitempty"`
	ProcessingTime        time.Duration `json:"processing_time"`
	AverageProcessingTime time.Duration `json:"average_processing_time"`
}

// New returns a Service that will serve cfg.Registry's functions on nc once
// started. It fails for a nil nc or a Version that is not SemVer; nothing
// runs until Start.
func New(nc *nats.Conn, cfg Config) (*Service, error) {
	if nc == nil {
		return nil, errors.New("runtime: new service: nil NATS connection")
	}
	if cfg.Version == "" {
		cfg.Version = Version
	}
	if !semver.MatchString(cfg.Version) {
		return nil, fmt.Errorf("runtime: new service: version %q is not SemVer", cfg.Version)
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry(Limits{})
	}
	if cfg.Workers <= 0 {
		cfg.Workers = goruntime.GOMAXPROCS(0)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 64 * cfg.Workers
	}
	workCtx, cancel := context.WithCancel(context.Background())
	return &Service{
		nc:         nc,
		cfg:        cfg,
		reg:        cfg.Registry,
		log:        cfg.Logger.With().Str("component", "rpc-runtime").Logger(),
		m:          newServedMetrics(cfg.Metrics),
		workerN:    cfg.Workers,
		jobs:       make(chan job, cfg.QueueSize),
		workCtx:    workCtx,
		cancelWork: cancel,
	}, nil
}

// builtinDescriptions describe the built-ins' endpoints in $SRV.INFO.
var builtinDescriptions = map[string]string{
	FnEcho:      "any bytes -> the same bytes",
	FnTransform: `{"data":"s"} -> {"data":"S","length":n}`,
	FnCompute:   `{"data":"s","rounds":N} -> {"digest":"<hex of sha256^N(s)>"}`,
}

// Start seals the registry, registers the micro service "runtime" with one
// endpoint per function and starts the worker pool. It returns once the
// server knows the subscriptions (a flush, bounded by ctx or, without a
// deadline, 10 s), so that a request sent right after finds a responder.
// It fails with ErrStarted when called twice, ErrStopped after Shutdown, or
// when a subscription cannot be made or flushed; nothing is left running
// then.
func (s *Service) Start(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	switch {
	case s.stopped:
		return ErrStopped
	case s.started:
		return ErrStarted
	}
	names := s.reg.seal()
	s.stats = make(map[string]*endpointStats, len(names))
	for _, fn := range names {
		s.stats[fn] = &endpointStats{}
	}
	limits := s.reg.Limits()
	group := s.cfg.Subjects.RPCGroup()
	meta := map[string]string{
		"subject_prefix": group,
		"workers":        strconv.Itoa(s.workerN),
		"max_payload":    strconv.Itoa(limits.MaxPayload),
		"max_rounds":     strconv.Itoa(limits.MaxRounds),
	}
	for k, v := range s.cfg.Metadata {
		meta[k] = v
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     s.cfg.Version,
		Description: "pipeline runtime functions for delegated calls: " + strings.Join(names, ", "),
		Metadata:    meta,
		QueueGroup:  broker.RPCQueueGroup,
		StatsHandler: func(e *micro.Endpoint) any {
			return s.endpointData(e.Name)
		},
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			s.log.Warn().Str("subject", err.Subject).Str("error", err.Description).Msg("runtime service error")
		},
	})
	if err != nil {
		return fmt.Errorf("runtime: add micro service %q: %w", ServiceName, err)
	}
	s.svc, s.started = svc, true

	for range s.workerN {
		s.workers.Go(s.work)
	}
	g := svc.AddGroup(group)
	for _, fn := range names {
		desc := builtinDescriptions[fn]
		if desc == "" {
			desc = "user function"
		}
		if err := g.AddEndpoint(fn, s.handler(fn), micro.WithEndpointMetadata(map[string]string{"description": desc})); err != nil {
			return errors.Join(fmt.Errorf("runtime: add endpoint %q: %w", fn, err), s.stop(context.Background()))
		}
	}
	fctx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		fctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	}
	defer cancel()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return errors.Join(fmt.Errorf("runtime: flush endpoint subscriptions: %w", err), s.stop(context.Background()))
	}
	s.log.Info().Str("id", svc.Info().ID).Str("group", group).Strs("functions", names).
		Int("workers", s.workerN).Msg("runtime service started")
	return nil
}

// ID is the micro service instance id (as listed by `nats micro ls`), or ""
// before Start.
func (s *Service) ID() string {
	if svc := s.micro(); svc != nil {
		return svc.Info().ID
	}
	return ""
}

// Info returns the micro service's description ($SRV.INFO); the zero Info
// before Start.
func (s *Service) Info() micro.Info {
	if svc := s.micro(); svc != nil {
		return svc.Info()
	}
	return micro.Info{}
}

// Stats returns the micro service's statistics ($SRV.STATS), each endpoint's
// Data being an EndpointData; the zero Stats before Start.
func (s *Service) Stats() micro.Stats {
	if svc := s.micro(); svc != nil {
		return svc.Stats()
	}
	return micro.Stats{}
}

func (s *Service) micro() micro.Service {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	return s.svc
}

// Shutdown unregisters the service and drains it. Once it returns, the
// server routes no new request to this instance, and every request handed
// to the worker pool has been answered (requests the server had already
// sent are still answered, inline, by the draining subscriptions). If ctx
// ends first, the functions still running see their context cancelled and
// Shutdown returns ctx's error once they return. After Shutdown, Start
// fails with ErrStopped. Shutdown before Start only marks the Service
// stopped; later calls return the first call's result.
//
// Order: stop the micro service (its subscriptions drain) and flush so the
// server stops routing requests here; stop accepting work into the pool;
// let the workers answer every queued request; return.
func (s *Service) Shutdown(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	if !s.started {
		s.cancelWork()
		return nil
	}
	s.stopErr = s.stop(ctx)
	return s.stopErr
}

// stop is Shutdown's work; lifeMu is held.
func (s *Service) stop(ctx context.Context) error {
	s.stopped = true
	var errs []error
	// 1. Stop the micro service: its subscriptions drain (asynchronously),
	//    so the handler may still be called for a while.
	if err := s.svc.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("runtime: stop micro service: %w", err))
	}
	//    Flush so that the server has processed the unsubscribes when Stop
	//    returns: no new request is routed to this instance after that.
	if err := s.nc.Flush(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("runtime: flush unsubscribes: %w", err))
	}
	// 2. Close the pool's queue; from now on the handler runs requests
	//    inline instead (requests the server sent before the unsubscribe
	//    and still pending in the draining subscriptions).
	s.mu.Lock()
	s.closed = true
	close(s.jobs)
	s.mu.Unlock()
	// 3. Wait for the workers to answer what was queued, cancelling the
	//    functions' context if ctx ends first.
	done := make(chan struct{})
	go func() { s.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancelWork()
		<-done
		errs = append(errs, fmt.Errorf("runtime: shutdown: requests still running: %w", ctx.Err()))
	}
	s.cancelWork()
	s.log.Info().Msg("runtime service stopped")
	return errors.Join(errs...)
}

// handler hands each request of endpoint fn to the worker pool. It runs on
// the endpoint's subscription goroutine, one request at a time.
func (s *Service) handler(fn string) micro.Handler {
	st := s.stats[fn]
	return micro.HandlerFunc(func(req micro.Request) {
		j := job{fn: fn, data: req.Data(), reply: req.Reply(), stats: st}
		s.mu.RLock()
		if !s.closed {
			s.jobs <- j
			s.mu.RUnlock()
			return
		}
		s.mu.RUnlock()
		s.run(j)
	})
}

func (s *Service) work() {
	for j := range s.jobs {
		s.run(j)
	}
}

// run executes one request and publishes the reply. It does not use the
// micro.Request (whose methods are not safe to call after the handler
// returned): it publishes to the reply subject itself, setting the micro
// error headers on failure. The counters are updated before the reply goes
// out, so a client that got its reply sees itself counted in $SRV.STATS.
func (s *Service) run(j job) {
	start := time.Now()
	out, err := s.reg.Call(s.workCtx, j.fn, j.data)
	d := time.Since(start)
	code, msg := status(err)
	s.count(j, code, msg, d, true)
	s.m.served(j.fn, viaNATS, code, d)
	if j.reply == "" {
		return
	}
	reply := &nats.Msg{Subject: j.reply, Data: out}
	if err != nil {
		reply = errorMsg(j.reply, code, msg)
	}
	perr := s.nc.PublishMsg(reply)
	if perr == nil || err != nil {
		return
	}
	// Most likely a reply over the server's max payload: say so.
	code, msg = http.StatusInternalServerError, "cannot send reply: "+perr.Error()
	s.count(j, code, msg, 0, false)
	if perr := s.nc.PublishMsg(errorMsg(j.reply, code, msg)); perr != nil {
		s.log.Warn().Err(perr).Str("fn", j.fn).Msg("cannot send error reply")
	}
}

// count records one request that took d (or, when newRequest is false, one
// more error of a request already counted) in the endpoint's statistics;
// code 0 means success.
func (s *Service) count(j job, code int, msg string, d time.Duration, newRequest bool) {
	if newRequest {
		j.stats.requests.Add(1)
		j.stats.processing.Add(int64(d))
	}
	if code == 0 {
		return
	}
	j.stats.errors.Add(1)
	j.stats.lastError.Store(&msg)
	if code >= 500 {
		s.log.Warn().Int("status", code).Str("error", msg).Str("fn", j.fn).Msg("runtime request failed")
	}
}

// errorMsg is a micro error reply: the Nats-Service-Error and
// Nats-Service-Error-Code headers plus a {"error":"..."} body.
func errorMsg(reply string, code int, msg string) *nats.Msg {
	return &nats.Msg{
		Subject: reply,
		Header: nats.Header{
			micro.ErrorHeader:     []string{msg},
			micro.ErrorCodeHeader: []string{strconv.Itoa(code)},
		},
		Data: appendErrorJSON(nil, msg),
	}
}

func (s *Service) endpointData(fn string) any {
	st, ok := s.stats[fn]
	if !ok {
		return nil
	}
	d := EndpointData{
		Workers:        s.workerN,
		NumRequests:    st.requests.Load(),
		NumErrors:      st.errors.Load(),
		ProcessingTime: time.Duration(st.processing.Load()),
	}
	if p := st.lastError.Load(); p != nil {
		d.LastError = *p
	}
	if d.NumRequests > 0 {
		d.AverageProcessingTime = d.ProcessingTime / time.Duration(d.NumRequests)
	}
	return d
}
