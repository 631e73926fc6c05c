package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
)

// ErrStopped is returned by Start after Shutdown.
var ErrStopped = errors.New("executor: stopped")

// Config configures one executor. Zero values take the defaults named on each
// field (DefaultConfig has them all). The fields with a yaml tag are part of
// the `executor` section of the configuration file.
type Config struct {
	// ID names this executor in results and logs. Default: host-<random>.
	ID string `yaml:"id"`
	// Subjects derives subject names. Default prefix "pipeline".
	Subjects broker.Subjects `yaml:"-"`
	// Concurrency caps fetches in flight in this executor. Default 256.
	Concurrency int `yaml:"concurrency"`
	// PerHostConcurrency caps this executor's fetches in flight to one
	// destination host:port (taken after the policy check). A job whose host
	// is at its cap waits without holding an executor slot and without
	// using up a delivery (see hostGate). 0 means no cap, which is the zero
	// value; DefaultConfig sets DefaultPerHostConcurrency.
	PerHostConcurrency int `yaml:"per_host_concurrency"`
	// DiscoverInterval is how often the executor looks for origins with
	// stored jobs and no pull from it yet (an origin that starts is found at
	// once through its consumer-created advisory). Default 1 s.
	DiscoverInterval time.Duration `yaml:"discover_interval"`
	// Fetcher bounds the outbound fetches.
	Fetcher FetcherConfig `yaml:",inline"`
	// Retry is the in-process retry policy for failed fetches.
	Retry RetryPolicy `yaml:"retry"`
	// Destinations are per-host politeness settings: a cluster-wide rate,
	// and a concurrency cap overriding PerHostConcurrency (destinations.go).
	Destinations []Destination `yaml:"destinations"`
	// RetryAfterMax is the longest total wait a job makes for 429 and 503
	// responses with Retry-After before their response is returned as the
	// result. Default 60 s (DefaultRetryAfterMax).
	RetryAfterMax time.Duration `yaml:"retry_after_max"`
	// BulkLatencyTarget is the scheduling latency (the mean time this
	// process's runnable goroutines wait for a CPU) above which the
	// executor slows the storing of large results, so that they take only
	// the CPU that small jobs leave (pacer.go). Default 100 µs
	// (DefaultBulkLatencyTarget); a negative value turns the pacing off.
	BulkLatencyTarget time.Duration `yaml:"bulk_latency_target"`
	// JobsKeeperInterval is how often the executor publishes a keeper
	// message into the jobs stream, so that a stream that empties after
	// every job does not make the NATS server create and delete a file per
	// job (broker.KeepJobsBlock). Default 15 s (broker.KeeperInterval); a
	// negative value turns it off.
	JobsKeeperInterval time.Duration `yaml:"jobs_keeper_interval"`
	// Circuit configures the per-host circuit breaker.
	Circuit CircuitConfig `yaml:"circuit"`
	// Policy is the destination policy (SSRF protection) New builds, unless
	// Fetcher.Policy is set. Its zero value denies every special-purpose
	// address range.
	Policy netpolicy.Config `yaml:"policy"`
	// Results are the results stream's settings (the streams section:
	// result_retention, result_retention_max_bytes, max_result_bytes),
	// which the executor's results trimming follows (broker.TrimResults,
	// trim.go). Its Subjects are set from Subjects. Zero values take
	// broker.DefaultStreamsConfig's.
	Results broker.StreamsConfig `yaml:"-"`
	// NoDeadLetters disables this executor's share of dead-letter processing.
	NoDeadLetters bool `yaml:"-"`
	// Metrics, when set, receives the executor's metrics (jobs by outcome,
	// in flight, redeliveries, fetch time). Default: none.
	Metrics *metrics.Metrics `yaml:"-"`
	// Logger receives one line per notable event. Default: discard.
	Logger zerolog.Logger `yaml:"-"`
}

// DefaultBulkLatencyTarget is Config.BulkLatencyTarget's default. Without
// large results the mean stays at 20-60 µs on the 2-core development box;
// with an unpaced bulk lane it was 200 µs to several ms.
const DefaultBulkLatencyTarget = 100 * time.Microsecond

// DefaultConfig returns the executor settings with every default filled in
// (ID stays empty: New makes one up per executor).
//
// PerHostConcurrency is the one setting whose zero value is not its
// default (0 means no cap): DefaultConfig sets it to
// DefaultPerHostConcurrency.
func DefaultConfig() Config {
	c := Config{}.withDefaults()
	c.PerHostConcurrency = DefaultPerHostConcurrency
	return c
}

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = 256
	}
	if c.PerHostConcurrency < 0 {
		c.PerHostConcurrency = 0
	}
	if c.DiscoverInterval <= 0 {
		c.DiscoverInterval = time.Second
	}
	c.Fetcher = c.Fetcher.withDefaults()
	c.Retry = c.Retry.withDefaults()
	if c.RetryAfterMax == 0 {
		c.RetryAfterMax = DefaultRetryAfterMax
	}
	if c.BulkLatencyTarget == 0 {
		c.BulkLatencyTarget = DefaultBulkLatencyTarget
	}
	if c.JobsKeeperInterval == 0 {
		c.JobsKeeperInterval = broker.KeeperInterval
	}
	c.Circuit = c.Circuit.withDefaults()
	if c.Policy.MaxRedirects == 0 {
		c.Policy.MaxRedirects = netpolicy.DefaultMaxRedirects
	}
	return c
}

// Executor pulls jobs from the shared executors consumer and fetches them.
// Create with New, run with Start, stop with Shutdown.
type Executor struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	fetcher *Fetcher
	log     zerolog.Logger

	sem chan struct{}
	// bulk caps this executor's large results being stored at once
	// (bulkPublishes), so that a small result, stored by any executor,
	// waits behind a few MiB of large ones in the stream at most.
	bulk  chan struct{}
	hosts *hostGate // nil: no per-host cap
	pol   *polite   // destination politeness (politeness.go)
	wg    sync.WaitGroup
	mu    sync.Mutex
	dlq   jetstream.ConsumeContext

	// pace slows large results while this process is short of CPU (nil:
	// no pacing). paceStop ends its goroutine (nil until Start starts it);
	// paceDone is closed when it returned. Both guarded by mu.
	pace               *pacer
	paceStop, paceDone chan struct{}

	// Per-origin pulls (fairshare.go); set by Start.
	stream       jetstream.Stream
	tmpl         broker.JobsTemplate // read and written by the discovery goroutine
	orig         origins
	wake         chan string
	advSub       *nats.Subscription
	discoverStop chan struct{}
	discoverDone chan struct{}
	drained      []jetstream.ConsumeContext

	cancels  cancels
	trim     trimmer // results trimming (trim.go)
	ackWait  time.Duration
	stopped  bool
	inflight context.Context
	abort    context.CancelFunc
	m        *Metrics // nil: no metrics
}

// New returns an executor that uses nc. It does not contact the server.
func New(nc *nats.Conn, cfg Config) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new executor: %w", err)
	}
	cfg = cfg.withDefaults()
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%s", host, nuid.Next()[16:])
	}
	cfg.Results.Subjects = cfg.Subjects
	if cfg.Fetcher.Policy == nil {
		pol, err := netpolicy.New(cfg.Policy)
		if err != nil {
			return nil, fmt.Errorf("new executor: destination policy: %w", err)
		}
		cfg.Fetcher.Policy = pol
	}
	f, err := NewFetcher(cfg.Fetcher)
	if err != nil {
		return nil, fmt.Errorf("new executor: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("new executor: jetstream: %w", err)
	}
	hosts := newHostGateFor(cfg)
	inflight, abort := context.WithCancel(context.Background())
	m := MetricsOf(cfg.Metrics)
	return &Executor{
		pol:      newPolite(cfg, m),
		hosts:    hosts,
		orig:     origins{pulls: map[string]*originPull{}, idle: map[string]struct{}{}},
		cfg:      cfg,
		nc:       nc,
		js:       js,
		fetcher:  f,
		log:      cfg.Logger.With().Str("component", "executor").Str("executor", cfg.ID).Logger(),
		sem:      make(chan struct{}, cfg.Concurrency),
		bulk:     make(chan struct{}, bulkPublishes),
		pace:     newPacer(cfg.BulkLatencyTarget, m),
		inflight: inflight,
		abort:    abort,
		m:        m,
		trim:     trimmer{kick: make(chan struct{}, 1)},
	}, nil
}

// ID is the executor's id as reported in results.
func (e *Executor) ID() string { return e.cfg.ID }

// Start starts pulling jobs from every origin that has any (one jobs
// consumer per origin, see fairshare.go) and following origins as they come
// and go. The streams must exist, provisioned by this version
// (broker.Provision); otherwise it fails, with broker.ErrNoJobsTemplate for
// an older store. It returns once pulling started.
func (e *Executor) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	if !e.cfg.NoDeadLetters {
		dlq, err := e.startDeadLetters(ctx)
		if err != nil {
			return fmt.Errorf("executor start: %w", err)
		}
		e.dlq = dlq
	}
	if err := e.startCancels(ctx); err != nil {
		if e.dlq != nil {
			e.dlq.Stop()
		}
		return fmt.Errorf("executor start: %w", err)
	}
	if err := e.startPolite(ctx); err != nil {
		e.cancels.stop()
		if e.dlq != nil {
			e.dlq.Stop()
		}
		return fmt.Errorf("executor start: %w", err)
	}
	if err := e.startOrigins(ctx); err != nil {
		if e.dlq != nil {
			e.dlq.Stop()
		}
		e.cancels.stop()
		e.closePolite()
		return fmt.Errorf("executor start: %w", err)
	}
	e.startTrim()
	if e.pace != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		e.paceStop, e.paceDone = stop, done
		go func() { defer close(done); e.pace.run(stop) }()
	}
	e.log.Info().Int("concurrency", e.cfg.Concurrency).Int("per_host_concurrency", e.cfg.PerHostConcurrency).Msg("executor consuming jobs")
	return nil
}

// task is one delivered job on its way through the executor.
type task struct {
	msg    jetstream.Msg
	meta   *jetstream.MsgMetadata
	job    *broker.Job
	log    zerolog.Logger
	picked time.Time
	origin string // from the subject
	host   string // destination host:port; "" when the job needs no host slot

	// While the task waits for its host (hostGate):
	stopWait func() // stops its in-progress acks

	p taskPolite // destination politeness (politeness.go)
}

// handle runs on one origin's delivery goroutine. It checks the job and
// its destination host first: a job whose host is at its cap is parked
// without taking an executor slot (see hostGate). Otherwise it waits for a
// free executor slot (backpressure on that origin's pull; origins waiting
// are served in turn, see fairshare.go) and hands the job to a worker
// goroutine, which then also runs the jobs parked for the same host, on the
// same slots, as their turn comes.
func (e *Executor) handle(msg jetstream.Msg) {
	t := e.prepare(msg)
	if t == nil || e.holdForHost(t) {
		return
	}
	e.admit(t)
}

// admit takes t's host slot (or parks t) and an executor slot, and runs t
// on a worker goroutine.
func (e *Executor) admit(t *task) {
	msg := t.msg
	if e.hosts != nil && t.host != "" {
		switch e.hosts.acquire(t, e.blockedOnPark, e.startWaiting) {
		case gateParked:
			return
		case gateClosed:
			_ = msg.Nak()
			return
		}
	}
	select {
	case e.sem <- struct{}{}:
	default:
		e.m.Waiting(WaitShare, 1)
		e.sem <- struct{}{}
		e.m.Waiting(WaitShare, -1)
	}
	e.wg.Add(1)
	go func() {
		defer func() { <-e.sem; e.wg.Done() }()
		e.work(t)
	}()
}

// work runs t, then, while jobs are parked for t's host, the next of them
// on the same host slot.
func (e *Executor) work(t *task) {
	for t != nil {
		e.m.Begin()
		e.process(t)
		e.m.End()
		if e.hosts == nil || t.host == "" {
			return
		}
		t = e.hosts.release(t.host, e.stopWaiting)
	}
}

// blockedOnPark keeps a job alive while its origin's pull waits for a place
// in the park.
func (e *Executor) blockedOnPark(t *task, blocked bool) {
	if blocked {
		e.startWaiting(t)
	} else {
		e.stopWaiting(t)
	}
}

// startWaiting keeps a job that waits for its host alive: in-progress acks
// every third of AckWait, however long it waits, so waiting neither triggers
// a redelivery nor counts as a delivery.
func (e *Executor) startWaiting(t *task) {
	t.stopWait = e.keepAlive(t.msg, -1)
	e.m.Waiting(waitHostCap, 1)
}

// stopWaiting undoes startWaiting for a task leaving the wait.
func (e *Executor) stopWaiting(t *task) {
	if t.stopWait != nil {
		t.stopWait()
		t.stopWait = nil
	}
	e.m.Waiting(waitHostCap, -1)
}

// prepare checks a delivered job. It returns nil when the job was
// terminated (undecodable, or its body names another origin than its
// subject).
func (e *Executor) prepare(msg jetstream.Msg) *task {
	picked := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		e.log.Error().Err(err).Msg("job without metadata; terminating it")
		_ = msg.Term()
		return nil
	}
	job, err := broker.DecodeJob(msg.Data())
	if err != nil {
		e.log.Error().Err(err).Uint64("stream_seq", meta.Sequence.Stream).Msg("undecodable job; terminating it")
		_ = msg.TermWithReason("undecodable job")
		return nil
	}
	log := e.log.With().Str("job", job.ID).Str("origin", job.Origin).Logger()
	if meta.NumDelivered > 1 {
		e.m.Redelivered()
	}
	// The result goes to the origin named by the subject the job arrived on,
	// which NATS permissions control, never to one the body claims: a
	// compromised origin must not inject results into another origin.
	if o, ok := e.cfg.Subjects.JobOrigin(msg.Subject()); !ok || o != job.Origin {
		log.Warn().Str("subject", msg.Subject()).Msg("job origin does not match its subject; terminating it")
		_ = msg.TermWithReason("job origin does not match its subject")
		return nil
	}
	if e.cancels.canceled(cancelKey(job.Origin, job.ID)) {
		// Its origin canceled it and answered its clients.
		log.Debug().Msg("job canceled before it ran")
		e.m.Canceled()
		_ = msg.Ack()
		return nil
	}
	t := &task{msg: msg, meta: meta, job: job, log: log, picked: picked, origin: job.Origin}
	if e.hosts != nil || e.pol != nil {
		t.host = e.fetcher.destination(job.URL)
	}
	return t
}

// process fetches a prepared job, stores its result and acks it.
func (e *Executor) process(t *task) {
	msg, meta, job, log := t.msg, t.meta, t.job, t.log
	// Long fetches tell the server the job is still being worked on, so it is
	// not redelivered while in flight.
	stopProgress := e.keepAlive(msg, e.fetcher.Timeout(job)*time.Duration(e.cfg.Retry.Attempts))
	ctx, done := e.cancels.run(e.inflight, cancelKey(job.Origin, job.ID))
	defer done()
	start := time.Now()
	resp, ferr := e.fetchWithRetry(ctx, t)
	fetchDur := time.Since(start)
	e.m.Fetched(fetchDur)
	stopProgress()
	if ferr == nil && e.waitRetryAfter(t, resp) {
		return // held; runs again after the wait
	}

	res := &broker.Result{
		JobID:        job.ID,
		Origin:       job.Origin,
		ClientID:     job.ClientID,
		Attempt:      int(meta.NumDelivered),
		Executor:     e.cfg.ID,
		ReceivedAt:   job.ReceivedAt,
		StoredAt:     meta.Timestamp.UnixNano(),
		PickedAt:     t.picked.UnixNano(),
		FetchNanos:   int64(fetchDur),
		Continuation: job.Continuation,
		DelayMS:      job.DelayMS,
		Attempts:     t.p.attempts,
		WaitedNanos:  int64(t.p.waited),
	}
	if ferr != nil {
		if e.inflight.Err() != nil {
			// Aborted by a forced shutdown: leave the job for another executor.
			_ = msg.Nak()
			return
		}
		if ctx.Err() != nil {
			// Canceled by its origin, which sent the final frame.
			log.Debug().Msg("running fetch aborted: job canceled")
			e.m.Canceled()
			_ = msg.Ack()
			return
		}
		res.Error = broker.ErrorOf(ferr)
		log.Debug().Str("code", string(res.Error.Code)).Err(logSafe(ferr)).Msg("fetch failed")
	} else {
		res.Status, res.Headers, res.Body, res.Truncated = resp.Status, resp.Headers, resp.Body, resp.Truncated
	}
	if err := e.publishWaiting(msg, res, job.BulkLane, log); err != nil {
		e.m.PublishFailed()
		log.Warn().Err(err).Msg("result not stored; job will be redelivered")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	e.count(res)
	if err := msg.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack failed; job may be redelivered (result is de-duplicated)")
	}
}

// publishWaiting stores res like publish. While the results stream is full
// (its origin does not keep up: the stream refuses new results rather than
// drop stored ones) it keeps the job, kept alive with in-progress acks, and
// tries again with a growing pause, so a full stream slows the executors
// down instead of losing a result or fetching the job again; each refusal
// asks the executor's trimmer for a trim at once (trim.go: rate limited),
// which drops results their origins are done with. It gives up on
// other errors, and when the executor stops.
func (e *Executor) publishWaiting(msg jetstream.Msg, res *broker.Result, bulkLane bool, log zerolog.Logger) error {
	err := e.publish(res, bulkLane)
	if err == nil || broker.CodeOf(err) != broker.CodeQueueFull {
		return err
	}
	e.m.ResultHeld()
	e.kickTrim()
	log.Warn().Err(err).Msg("results stream full: holding the result until its origin catches up")
	stop := e.keepAlive(msg, -1)
	defer stop()
	pause := 50 * time.Millisecond
	for broker.CodeOf(err) == broker.CodeQueueFull {
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-e.inflight.Done():
			t.Stop()
			return err
		}
		pause = min(2*pause, 2*time.Second)
		err = e.publish(res, bulkLane)
		if broker.CodeOf(err) == broker.CodeQueueFull {
			e.kickTrim()
		}
	}
	return err
}

// bulkPublishes is how many large results (broker.BulkResultBytes and
// more) one executor stores at once. Each is a write of up to the body cap
// into the results stream, which stores in order: with every executor's
// large results in flight ahead of it, a small result would wait for tens
// of MiB to be written. The cap holds the rest in the executor, and keeps
// the bulk lane's throughput (measured in README "Bounds per connection").
const bulkPublishes = 2

// publish stores the result in the results stream as its job's finished
// record: on the job's own subject, if the job holds no record yet on
// either lane (broker.FirstRecord). A large result of a job whose origin
// reads the bulk lane (bulkLane) goes to that lane, one of bulkPublishes
// at a time. A job that has a record (this job fetched again after a
// redelivery, or canceled first) stores nothing and counts as stored. An id
// that is no subject token (not one an origin of ours makes) goes to the
// plain results subject, de-duplicated by its Nats-Msg-Id.
func (e *Executor) publish(res *broker.Result, bulkLane bool) error {
	data, err := res.Encode()
	if err != nil {
		return err
	}
	s := e.cfg.Subjects
	subj, record := s.ResultOf(res.Origin, res.JobID), s.RecordOf(res.Origin, res.JobID)
	opt := broker.FirstRecord(record)
	bulk := false
	switch {
	case broker.ValidateToken("job id", res.JobID) != nil || res.JobID == broker.LegacyResultToken:
		subj, opt = s.Result(res.Origin), jetstream.WithMsgID(res.JobID)
	case bulkLane && len(data) >= broker.BulkResultBytes:
		subj, bulk = s.BulkResultOf(res.Origin, res.JobID), true
		e.bulk <- struct{}{}
		defer func() { <-e.bulk }()
		if err := e.pace.wait(e.inflight, len(data)); err != nil {
			return fmt.Errorf("publish result %s: %w", res.JobID, err)
		}
	}
	if !bulk {
		e.pace.smallStored()
	}
	err = e.store(subj, data, opt)
	if bulk && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
		// No stream takes the bulk lane: the results stream was provisioned
		// (again) by a process of an older version during an upgrade. The
		// small lane still works; the origin reads both.
		e.log.Warn().Str("job", res.JobID).Msg("results stream has no bulk lane (provisioned by an older version?); result stored on the small lane")
		subj = s.ResultOf(res.Origin, res.JobID)
		err = e.store(subj, data, opt)
	}
	if err == nil {
		return nil
	}
	if !broker.IsRecordTaken(err) {
		return fmt.Errorf("publish result %s: %w", res.JobID, err)
	}
	if !broker.IsKeyJobID(res.JobID) {
		e.log.Debug().Str("job", res.JobID).Msg("the job has a finished record already; result not stored again")
		return nil
	}
	// A key's id: the record may be an earlier job's under the same key.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.StoreAfterRefusal(ctx, e.nc, e.js, "$JS.API", subj, record, res, data); err != nil {
		return fmt.Errorf("publish result %s: %w", res.JobID, err)
	}
	return nil
}

// store publishes one result and waits for its PubAck. Asynchronous
// publish, awaited here: cheaper than a request per result (no context,
// timer or reply round trip of its own); it gives up after the JetStream
// context's async publish timeout (10 s).
func (e *Executor) store(subj string, data []byte, opt jetstream.PublishOpt) error {
	fut, err := e.js.PublishAsync(subj, data, opt)
	if err != nil {
		return err
	}
	select {
	case <-fut.Ok():
		return nil
	case err = <-fut.Err():
		return err
	}
}

// keepAlive sends in-progress acks every third of AckWait while a fetch
// that may outlive AckWait runs; a negative timeout means until stopped. The
// returned func stops it.
func (e *Executor) keepAlive(msg jetstream.Msg, timeout time.Duration) func() {
	every := e.ackWait / 3
	if every <= 0 || (timeout >= 0 && timeout < every*2) {
		return func() {}
	}
	// A timer, not a goroutine: most fetches end long before it fires.
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // the callback waits until t is assigned
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(every)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// Shutdown stops pulling new jobs and waits for in-flight fetches to finish
// and their results to be stored. When ctx ends first, the remaining fetches
// are aborted and their jobs left for redelivery; ctx's error is returned.
func (e *Executor) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.stopped = true
	dlq := e.dlq
	e.mu.Unlock()
	if dlq != nil {
		dlq.Drain()
		select {
		case <-dlq.Closed():
		case <-ctx.Done():
		}
	}
	// Stop pulling: no job is delivered after the pulls' buffers.
	e.stopOrigins()
	// Jobs waiting for a busy host go back to JetStream at once, for
	// another executor (each costs a delivery, like any job an executor
	// gives back when it stops); jobs delivered from here on are given back
	// too.
	if e.hosts != nil {
		for _, t := range e.hosts.close(e.stopWaiting) {
			_ = t.msg.Nak()
		}
	}
	// Jobs held for their destination (rate, Retry-After) go back too,
	// delayed by what is left of their wait.
	e.closePolite()
	e.waitDrained(ctx)
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		e.abort()
		<-done
		err = fmt.Errorf("executor shutdown: %w", ctx.Err())
	}
	e.abort()
	e.stopPacer()
	e.stopTrim()
	e.cancels.stop()
	e.fetcher.Close()
	e.log.Info().Msg("executor stopped")
	return err
}

// stopPacer ends the pacer's goroutine, if Start started one, and waits
// for it.
func (e *Executor) stopPacer() {
	e.mu.Lock()
	stop, done := e.paceStop, e.paceDone
	e.paceStop = nil
	e.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
