package rpc

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
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
	// QueueGroup is the queue group every runtime endpoint subscribes in, so
	// that each request goes to exactly one runtime instance.
	QueueGroup = "runtime"
	// Version is the default service version.
	Version = "0.1.0"
)

// Subject is the NATS subject of function fn under subject prefix prefix
// ("" means broker.DefaultPrefix): "<prefix>.rpc.<fn>".
func Subject(prefix, fn string) string {
	return broker.Subjects{Prefix: prefix}.RPCGroup() + "." + fn
}

// ServiceConfig configures a runtime Service. The zero value works.
type ServiceConfig struct {
	// Version is the micro service version (SemVer). If empty, Version is used.
	Version string
	// SubjectPrefix is the subject prefix; endpoints live in the group
	// "<prefix>.rpc". If empty, broker.DefaultPrefix ("pipeline") is used.
	SubjectPrefix string
	// Limits bound the accepted requests; the zero value uses DefaultLimits.
	Limits Limits
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

	// call, if set, replaces Limits.Call (tests).
	call func(fn string, body []byte) ([]byte, error)
}

// Service is a running "runtime" micro service. Its methods are safe for
// concurrent use.
type Service struct {
	nc     *nats.Conn
	svc    micro.Service
	limits Limits
	log    zerolog.Logger
	// call runs a function: Limits.Call, or ServiceConfig.call in tests.
	call func(fn string, body []byte) ([]byte, error)
	m    *metrics.RPC // nil: no metrics

	mu      sync.RWMutex // guards stopped against the send on jobs
	stopped bool
	jobs    chan job
	workers sync.WaitGroup
	workerN int

	stats map[string]*endpointStats // by function; the map is read-only after NewService

	stopOnce sync.Once
	stopErr  error
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

// NewService registers the micro service "runtime" on nc with the endpoints
// echo, transform and compute in group "<prefix>.rpc" and queue group
// "runtime", and starts its worker pool. Any number of Services (in one
// process or many) may run against the same NATS: requests are shared among
// them. NewService returns once the server knows the subscriptions (a
// flush, bounded by 10 s). It fails when the configuration is invalid or a
// subscription cannot be made or flushed; nothing is left running then.
//
// Call Stop to unregister; closing nc stops the micro service but not the
// worker pool.
func NewService(nc *nats.Conn, cfg ServiceConfig) (*Service, error) {
	if nc == nil {
		return nil, errors.New("rpc: new service: nil NATS connection")
	}
	if cfg.Version == "" {
		cfg.Version = Version
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 64 * cfg.Workers
	}
	limits := cfg.Limits.withDefaults()
	s := &Service{
		nc:      nc,
		limits:  limits,
		log:     cfg.Logger.With().Str("component", "rpc-runtime").Logger(),
		call:    limits.Call,
		m:       cfg.Metrics.RPC(),
		jobs:    make(chan job, cfg.QueueSize),
		workerN: cfg.Workers,
		stats:   make(map[string]*endpointStats, 3),
	}
	if cfg.call != nil {
		s.call = cfg.call
	}
	for _, fn := range Functions() {
		s.stats[fn] = &endpointStats{}
	}

	meta := map[string]string{
		"subject_prefix": broker.Subjects{Prefix: cfg.SubjectPrefix}.RPCGroup(),
		"workers":        strconv.Itoa(cfg.Workers),
		"max_payload":    strconv.Itoa(limits.MaxPayload),
		"max_rounds":     strconv.Itoa(limits.MaxRounds),
	}
	for k, v := range cfg.Metadata {
		meta[k] = v
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     cfg.Version,
		Description: "pipeline runtime functions (echo, transform, compute) for delegated calls",
		Metadata:    meta,
		QueueGroup:  QueueGroup,
		StatsHandler: func(e *micro.Endpoint) any {
			return s.endpointData(e.Name)
		},
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			s.log.Warn().Str("subject", err.Subject).Str("error", err.Description).Msg("runtime service error")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("rpc: add micro service %q: %w", ServiceName, err)
	}
	s.svc = svc

	for range cfg.Workers {
		s.workers.Go(s.work)
	}

	group := svc.AddGroup(broker.Subjects{Prefix: cfg.SubjectPrefix}.RPCGroup())
	descriptions := map[string]string{
		FnEcho:      "any bytes -> the same bytes",
		FnTransform: `{"data":"s"} -> {"data":"S","length":n}`,
		FnCompute:   `{"data":"s","rounds":N} -> {"digest":"<hex of sha256^N(s)>"}`,
	}
	for _, fn := range Functions() {
		err := group.AddEndpoint(fn, s.handler(fn),
			micro.WithEndpointMetadata(map[string]string{"description": descriptions[fn]}))
		if err != nil {
			stopErr := s.Stop()
			return nil, errors.Join(fmt.Errorf("rpc: add endpoint %q: %w", fn, err), stopErr)
		}
	}
	// Make sure the server has the subscriptions before returning, so that a
	// request sent right after NewService finds a responder.
	if err := nc.Flush(); err != nil {
		stopErr := s.Stop()
		return nil, errors.Join(fmt.Errorf("rpc: flush endpoint subscriptions: %w", err), stopErr)
	}
	s.log.Info().Str("id", svc.Info().ID).Str("group", broker.Subjects{Prefix: cfg.SubjectPrefix}.RPCGroup()).
		Int("workers", cfg.Workers).Msg("runtime service started")
	return s, nil
}

// ID is the micro service instance id (as listed by `nats micro ls`).
func (s *Service) ID() string { return s.svc.Info().ID }

// Info returns the micro service's description ($SRV.INFO).
func (s *Service) Info() micro.Info { return s.svc.Info() }

// Stats returns the micro service's statistics ($SRV.STATS), each endpoint's
// Data being an EndpointData.
func (s *Service) Stats() micro.Stats { return s.svc.Stats() }

// Stop unregisters the service: once it returns, the server routes no new
// request to this instance, and every request handed to the worker pool has
// been answered. Requests the server had already sent are still answered,
// inline, by the draining subscriptions. It is safe to call more than once;
// later calls return the first call's result.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		// 1. Stop the micro service: its subscriptions drain (asynchronously),
		//    so the handler may still be called for a while.
		if err := s.svc.Stop(); err != nil {
			s.stopErr = fmt.Errorf("rpc: stop micro service: %w", err)
		}
		//    Flush so that the server has processed the unsubscribes when Stop
		//    returns: no new request is routed to this instance after that.
		if err := s.nc.Flush(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && s.stopErr == nil {
			s.stopErr = fmt.Errorf("rpc: flush unsubscribes: %w", err)
		}
		// 2. Close the pool's queue; from now on the handler runs requests
		//    inline instead (requests the server sent before the unsubscribe
		//    and still pending in the draining subscriptions).
		s.mu.Lock()
		s.stopped = true
		close(s.jobs)
		s.mu.Unlock()
		// 3. Wait for the workers to answer what was queued.
		s.workers.Wait()
		s.log.Info().Msg("runtime service stopped")
	})
	return s.stopErr
}

// handler hands each request of endpoint fn to the worker pool. It runs on
// the endpoint's subscription goroutine, one request at a time.
func (s *Service) handler(fn string) micro.Handler {
	st := s.stats[fn]
	return micro.HandlerFunc(func(req micro.Request) {
		j := job{fn: fn, data: req.Data(), reply: req.Reply(), stats: st}
		s.mu.RLock()
		if !s.stopped {
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
	out, err := s.call(j.fn, j.data)
	d := time.Since(start)
	s.count(j, err, d, true)
	s.m.Served(j.fn, ViaNATS, statusOf(err), d)
	if j.reply == "" {
		return
	}
	msg := &nats.Msg{Subject: j.reply, Data: out}
	if err != nil {
		msg = errorMsg(j.reply, AsError(err))
	}
	perr := s.nc.PublishMsg(msg)
	if perr == nil || err != nil {
		return
	}
	// Most likely a reply over the server's max payload: say so.
	err = errorf(http.StatusInternalServerError, "cannot send reply: %v", perr)
	s.count(j, err, 0, false)
	if perr := s.nc.PublishMsg(errorMsg(j.reply, AsError(err))); perr != nil {
		s.log.Warn().Err(perr).Str("fn", j.fn).Msg("cannot send error reply")
	}
}

// count records one request that took d (or, when newRequest is false, one
// more error of a request already counted) in the endpoint's statistics.
func (s *Service) count(j job, err error, d time.Duration, newRequest bool) {
	if newRequest {
		j.stats.requests.Add(1)
		j.stats.processing.Add(int64(d))
	}
	if err == nil {
		return
	}
	j.stats.errors.Add(1)
	msg := err.Error()
	j.stats.lastError.Store(&msg)
	if AsError(err).Code >= 500 {
		s.log.Warn().Err(err).Str("fn", j.fn).Msg("runtime request failed")
	}
}

// errorMsg is a micro error reply: the Nats-Service-Error and
// Nats-Service-Error-Code headers plus a {"error":"..."} body.
func errorMsg(reply string, e *Error) *nats.Msg {
	return &nats.Msg{
		Subject: reply,
		Header: nats.Header{
			micro.ErrorHeader:     []string{e.Message},
			micro.ErrorCodeHeader: []string{strconv.Itoa(e.Code)},
		},
		Data: appendErrorJSON(nil, e.Message),
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
