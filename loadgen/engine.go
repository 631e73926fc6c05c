package loadgen

import (
	"context"
	"errors"
	"fmt"
	"github.com/nats-io/nuid"
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/client/wire"
	"github.com/pipeline-dev/pipeline/internal/cpustat"
)

// Defaults used when the corresponding Config field is zero. They point at
// what `pipeline up --embedded-nats` starts (PROTOCOL.md §6).
const (
	DefaultOrigin = "ws://127.0.0.1:8080/ws"
	// DefaultTargetBase is where `pipeline up` serves the test target, and
	// DefaultTargetPath the endpoint fetched there unless told otherwise.
	DefaultTargetBase  = "http://127.0.0.1:8090"
	DefaultTargetPath  = "/delay?ms=0"
	DefaultTargetURL   = DefaultTargetBase + DefaultTargetPath
	DefaultMethod      = "GET"
	DefaultConcurrency = 100
	DefaultRequests    = 10000
	DefaultTimeout     = 30 * time.Second
	DefaultDialTimeout = 5 * time.Second
	// DefaultProgressInterval is how often Config.Progress is called.
	DefaultProgressInterval = 250 * time.Millisecond
)

// Config describes one load run. The zero value is usable: every zero field
// takes the default documented beside it.
type Config struct {
	// Origins are the WebSocket URLs of the origins to load; connections are
	// spread over them round robin. If empty, DefaultOrigin is used.
	Origins []string

	// TargetURL is the URL the pipeline fetches. If empty, DefaultTargetURL.
	TargetURL string
	// Method is the fetch method. If empty, DefaultMethod (GET).
	Method string
	// Headers and Body are sent with every fetch when non-empty.
	Headers map[string]string
	Body    string
	// FetchTimeout, when non-zero, is sent as the fetch's timeout_ms; zero
	// leaves the origin's default.
	FetchTimeout time.Duration
	// CPUPids are other processes (e.g. pipeline up) whose user+system CPU
	// over the measured phase is reported per fetch (Report.PidsCPUPerFetchUS;
	// read from /proc, Linux only).
	CPUPids []int
	// Keyed gives every fetch its own idempotency key (start-fetch "key",
	// PROTOCOL.md §1.1): a run-unique prefix and the fetch's id, to measure
	// what naming jobs costs.
	Keyed bool

	// Concurrency is the number of fetches in flight in closed-loop mode, and
	// the cap on fetches in flight in open-loop mode (Rate > 0). If zero,
	// DefaultConcurrency.
	Concurrency int
	// Connections is the number of WebSocket connections the fetches are
	// spread over. If zero, DefaultConnections(Concurrency, len(Origins)).
	Connections int

	// Requests is the number of measured fetches. Duration bounds the time
	// during which measured fetches are issued. When both are set the first
	// limit reached ends the run; when both are zero, DefaultRequests is used.
	// In open-loop mode with only Duration set, Rate×Duration fetches are sent.
	Requests int
	Duration time.Duration

	// WarmupRequests and WarmupDuration describe unmeasured fetches sent
	// before the measurement, with the same load model; the warm-up is
	// drained completely before the measured phase starts. Zero means none.
	WarmupRequests int
	WarmupDuration time.Duration

	// Rate, when positive, selects open-loop mode: fetches are issued at Rate
	// per second and latency is measured from each one's intended send time.
	Rate float64

	// Timeout is the client-side deadline of one fetch, counted as
	// CodeTimeout when it passes. If zero, DefaultTimeout.
	Timeout time.Duration
	// DialTimeout bounds the WebSocket handshake and the wait for the hello
	// frame. If zero, DefaultDialTimeout.
	DialTimeout time.Duration

	// Baseline, when set, makes Run also fetch TargetURL directly over HTTP
	// (same concurrency and count, no pipeline) and fill the report's
	// baseline and added-latency fields.
	Baseline bool

	// Progress, if non-nil, is called from a separate goroutine every
	// ProgressInterval (DefaultProgressInterval if zero) while a phase runs,
	// and once when it ends. It must not block for long.
	Progress         func(Progress)
	ProgressInterval time.Duration

	// Logger receives diagnostics (dial failures, lost connections, frames
	// that cannot be read). The zero value discards them.
	Logger zerolog.Logger
}

// Progress is a snapshot of a running phase, passed to Config.Progress.
type Progress struct {
	Phase    string        // "warmup", "measure" or "baseline"
	Elapsed  time.Duration // since the phase started
	Issued   int64         // fetches sent
	OK       int64         // result frames received
	Errors   int64         // error frames, timeouts and lost fetches
	InFlight int64
	// Requests is the number of fetches the phase will send, or 0 when it is
	// bounded by Duration only.
	Requests int64
	Duration time.Duration // the phase's time bound, or 0
	Done     bool          // the final call for this phase
}

// DefaultConnections is the number of WebSocket connections used for a given
// concurrency when Config.Connections is zero: one per 100 fetches in flight,
// at least 4 (so that one connection's head-of-line blocking is not
// measured), at least one per origin, never more than the concurrency, and at
// most 64.
func DefaultConnections(concurrency, origins int) int {
	n := (concurrency + 99) / 100
	n = max(n, 4, origins)
	n = min(n, 64, max(concurrency, 1))
	return max(n, 1)
}

// withDefaults returns cfg with every zero field replaced by its default, or
// an error for values that cannot work.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Origins) == 0 {
		cfg.Origins = []string{DefaultOrigin}
	}
	for _, o := range cfg.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return cfg, fmt.Errorf("loadgen: origin %q: want ws://HOST:PORT/PATH or wss://...", o)
		}
	}
	if cfg.TargetURL == "" {
		cfg.TargetURL = DefaultTargetURL
	}
	if cfg.Method == "" {
		cfg.Method = DefaultMethod
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Concurrency < 0 {
		return cfg, fmt.Errorf("loadgen: concurrency %d must be positive", cfg.Concurrency)
	}
	if cfg.Connections == 0 {
		cfg.Connections = DefaultConnections(cfg.Concurrency, len(cfg.Origins))
	}
	if cfg.Connections < 0 {
		return cfg, fmt.Errorf("loadgen: connections %d must be positive", cfg.Connections)
	}
	cfg.Connections = min(cfg.Connections, cfg.Concurrency)
	if cfg.Requests < 0 || cfg.Duration < 0 || cfg.WarmupRequests < 0 || cfg.WarmupDuration < 0 {
		return cfg, errors.New("loadgen: requests, duration and warm-up must not be negative")
	}
	if cfg.Requests == 0 && cfg.Duration == 0 {
		cfg.Requests = DefaultRequests
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return cfg, fmt.Errorf("loadgen: rate %v must be a positive number", cfg.Rate)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	return cfg, nil
}

// Run dials the origins, runs the warm-up (if any) and the measured phase,
// and returns the report of the measured phase. Errors of individual fetches
// never abort a run: they are counted by code in the report. Run fails with
// an error wrapping ErrNoOrigin when no connection could be opened. When ctx
// is canceled Run stops issuing fetches, waits briefly for those in flight,
// and returns the partial report together with an error wrapping ctx.Err().
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e, err := newEngine(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()

	if cfg.WarmupRequests > 0 || cfg.WarmupDuration > 0 {
		wp := e.newPhase("warmup", false, cfg.WarmupRequests, cfg.WarmupDuration)
		if err := e.runPhase(ctx, wp); err != nil {
			return nil, fmt.Errorf("loadgen: warm-up: %w", err)
		}
		e.warmupIssued = wp.issued.Load()
	}
	mp := e.newPhase("measure", true, cfg.Requests, cfg.Duration)
	cpu0, cpuOK := cpustat.Process()
	pids0, pidsErr := cpustat.PIDs(cfg.CPUPids)
	runErr := e.runPhase(ctx, mp)
	cpu1, _ := cpustat.Process()
	pids1, pidsErr1 := cpustat.PIDs(cfg.CPUPids)
	rep := e.report(mp)
	if n := rep.OK + rep.Errors; cpuOK && n > 0 {
		rep.ProcessCPUPerFetchUS = float64((cpu1 - cpu0).Microseconds()) / float64(n)
	}
	if n := rep.OK + rep.Errors; len(cfg.CPUPids) > 0 && n > 0 {
		if err := errors.Join(pidsErr, pidsErr1); err != nil {
			return rep, fmt.Errorf("loadgen: --cpu-pid: %w", err)
		}
		rep.PidsCPUPerFetchUS = float64((pids1 - pids0).Microseconds()) / float64(n)
	}
	e.close()
	if runErr != nil {
		return rep, fmt.Errorf("loadgen: measured phase: %w", runErr)
	}
	if cfg.Baseline {
		n := int(rep.Requests)
		if n == 0 {
			n = max(cfg.Requests, 1)
		}
		bl, err := RunBaseline(ctx, BaselineConfig{
			TargetURL:   cfg.TargetURL,
			Method:      cfg.Method,
			Headers:     cfg.Headers,
			Body:        cfg.Body,
			Concurrency: cfg.Concurrency,
			Rate:        cfg.Rate,
			Requests:    n,
			Warmup:      min(cfg.WarmupRequests, n),
			Timeout:     cfg.Timeout,
			Progress:    cfg.Progress,
			Interval:    cfg.ProgressInterval,
		})
		if bl != nil {
			rep.setBaseline(bl)
		}
		if err != nil {
			return rep, fmt.Errorf("loadgen: baseline: %w", err)
		}
	}
	return rep, nil
}

// engine is the state of one Run: its connections and the running phase.
type engine struct {
	cfg  Config
	log  zerolog.Logger
	base time.Time // zero of the run's monotonic nanosecond clock

	// frameSuffix is everything of a start-fetch frame after the id.
	frameSuffix []byte
	// keyPrefix, with Keyed, goes between the id and frameSuffix: the
	// frame's key is this run's nonce followed by the id again.
	keyPrefix []byte

	conns    []*client
	dialErrs map[string]string // origin → why no connection to it opened

	warmupIssued int64

	live    atomic.Int32  // connections still open
	allDead chan struct{} // closed when live drops to zero
	closing atomic.Bool   // set when the engine closes connections on purpose

	phase atomic.Pointer[phase]

	closeOnce sync.Once
	bg        sync.WaitGroup // readers, writers and the sweeper
	stopBG    chan struct{}
}

// now returns nanoseconds since the start of the run on the monotonic clock.
func (e *engine) now() int64 { return int64(time.Since(e.base)) }

func newEngine(ctx context.Context, cfg Config) (*engine, error) {
	e := &engine{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "loadgen").Logger(),
		base:     time.Now(),
		allDead:  make(chan struct{}),
		stopBG:   make(chan struct{}),
		dialErrs: map[string]string{},
	}
	suffix, err := encodeFrameSuffix(cfg)
	if err != nil {
		return nil, err
	}
	e.frameSuffix = suffix
	if cfg.Keyed {
		e.keyPrefix = []byte(`","key":"` + nuid.Next() + "-")
	}
	if err := e.dialAll(ctx); err != nil {
		return nil, err
	}
	e.bg.Add(1)
	go e.sweep()
	return e, nil
}

// encodeFrameSuffix pre-encodes the part of every start-fetch frame that
// follows the id, so sending a fetch is two appends and one write.
func encodeFrameSuffix(cfg Config) ([]byte, error) {
	f := wire.StartFetch{
		URL:       cfg.TargetURL,
		Method:    cfg.Method,
		Headers:   cfg.Headers,
		Body:      cfg.Body,
		TimeoutMS: cfg.FetchTimeout.Milliseconds(),
	}
	b, err := f.Suffix()
	if err != nil {
		return nil, fmt.Errorf("loadgen: encode start-fetch frame: %w", err)
	}
	return b, nil
}

// phase is one warm-up or measured period of a run.
type phase struct {
	name     string
	measured bool
	open     bool // open loop
	requests int64
	duration time.Duration

	tokens  atomic.Int64 // fetches left to issue (closed loop)
	stopped atomic.Bool  // no more fetches are issued
	wg      sync.WaitGroup

	startNs    int64
	lastDoneNs atomic.Int64 // last completion
	firstSent  atomic.Int64 // first actual dispatch (open loop)
	lastSent   atomic.Int64 // last actual dispatch (open loop)

	issued, ok, errs atomic.Int64

	free  chan slotRef // open loop: idle slots
	stats *stats       // nil for the warm-up
}

// slotRef names one slot of one connection.
type slotRef struct {
	c    *client
	slot int32
}

func (e *engine) newPhase(name string, measured bool, requests int, d time.Duration) *phase {
	p := &phase{
		name:     name,
		measured: measured,
		open:     e.cfg.Rate > 0,
		requests: int64(requests),
		duration: d,
	}
	if p.open && requests == 0 {
		p.requests = int64(math.Ceil(e.cfg.Rate * d.Seconds()))
	}
	if p.requests > 0 {
		p.tokens.Store(p.requests)
	} else {
		p.tokens.Store(math.MaxInt64)
	}
	if measured {
		p.stats = newStats()
	}
	return p
}

// take claims the right to issue one more fetch in closed-loop mode.
func (p *phase) take() bool {
	if p.stopped.Load() {
		return false
	}
	if p.tokens.Add(-1) < 0 {
		p.tokens.Store(0)
		return false
	}
	return true
}

// runPhase issues the phase's fetches and waits until every one of them has
// completed (by result, error, timeout or lost connection).
func (e *engine) runPhase(ctx context.Context, p *phase) error {
	if e.live.Load() == 0 {
		return ErrNoOrigin
	}
	if p.open {
		p.free = e.freeSlots()
	}
	p.startNs = e.now()
	p.lastDoneNs.Store(p.startNs)
	e.phase.Store(p)

	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if e.cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			e.reportProgress(p, progressDone)
		}()
	}
	defer func() {
		close(progressDone)
		progressWG.Wait()
	}()

	var timer *time.Timer
	if p.duration > 0 {
		timer = time.AfterFunc(p.duration, func() { p.stopped.Store(true) })
		defer timer.Stop()
	}
	// Stop issuing as soon as the caller gives up.
	stopOnCancel := context.AfterFunc(ctx, func() { p.stopped.Store(true) })
	defer stopOnCancel()

	dispatchDone := make(chan struct{})
	if p.open {
		go func() {
			defer close(dispatchDone)
			e.dispatchOpen(ctx, p)
		}()
	} else {
		e.startClosed(p)
		close(dispatchDone)
	}

	allDone := make(chan struct{})
	go func() {
		<-dispatchDone
		p.wg.Wait()
		close(allDone)
	}()

	select {
	case <-allDone:
		return nil
	case <-ctx.Done():
	}
	// Interrupted: give fetches in flight a moment, then cut the connections;
	// whatever is still in flight is counted as canceled.
	grace := time.NewTimer(min(e.cfg.Timeout, time.Second))
	defer grace.Stop()
	select {
	case <-allDone:
	case <-grace.C:
		e.close()
		<-allDone
	}
	return ctx.Err()
}

// startClosed fills every slot of every live connection once; completions
// then keep the slots busy until the tokens run out.
func (e *engine) startClosed(p *phase) {
	for _, c := range e.conns {
		if c.dead.Load() {
			continue
		}
		for s := range c.slots {
			if !p.take() {
				return
			}
			c.issue(p, int32(s), 0)
		}
	}
}

// dispatchOpen issues fetches on the open-loop schedule. A fetch whose slot
// is not free at its intended time waits for one; its latency still counts
// from the intended time.
func (e *engine) dispatchOpen(ctx context.Context, p *phase) {
	interval := float64(time.Second) / e.cfg.Rate
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := int64(0); p.requests == 0 || i < p.requests; i++ {
		if p.stopped.Load() {
			return
		}
		intended := p.startNs + int64(float64(i)*interval)
		if wait := intended - e.now(); wait > 50*int64(time.Microsecond) {
			timer.Reset(time.Duration(wait))
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			case <-e.allDead:
				return
			}
			if p.stopped.Load() {
				return
			}
		}
		for {
			var ref slotRef
			select {
			case ref = <-p.free:
			case <-ctx.Done():
				return
			case <-e.allDead:
				return
			}
			if ref.c.dead.Load() {
				continue
			}
			now := e.now()
			p.firstSent.CompareAndSwap(0, now)
			p.lastSent.Store(now)
			ref.c.issue(p, ref.slot, intended)
			break
		}
	}
}

// freeSlots returns a channel holding every slot of every live connection,
// interleaved so that consecutive fetches use different connections.
func (e *engine) freeSlots() chan slotRef {
	total := 0
	for _, c := range e.conns {
		total += len(c.slots)
	}
	free := make(chan slotRef, total)
	for s := 0; ; s++ {
		added := false
		for _, c := range e.conns {
			if s < len(c.slots) && !c.dead.Load() {
				free <- slotRef{c, int32(s)}
				added = true
			}
		}
		if !added {
			return free
		}
	}
}

// reportProgress calls Config.Progress until done is closed, then once more
// with Done set.
func (e *engine) reportProgress(p *phase, done <-chan struct{}) {
	t := time.NewTicker(e.cfg.ProgressInterval)
	defer t.Stop()
	snap := func(final bool) Progress {
		issued, ok, errs := p.issued.Load(), p.ok.Load(), p.errs.Load()
		return Progress{
			Phase:    p.name,
			Elapsed:  time.Duration(e.now() - p.startNs),
			Issued:   issued,
			OK:       ok,
			Errors:   errs,
			InFlight: issued - ok - errs,
			Requests: p.requests,
			Duration: p.duration,
			Done:     final,
		}
	}
	for {
		select {
		case <-t.C:
			e.cfg.Progress(snap(false))
		case <-done:
			e.cfg.Progress(snap(true))
			return
		}
	}
}

// sweep completes fetches whose deadline passed with CodeTimeout.
func (e *engine) sweep() {
	defer e.bg.Done()
	tick := min(max(e.cfg.Timeout/20, 5*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	limit := int64(e.cfg.Timeout)
	for {
		select {
		case <-e.stopBG:
			return
		case <-t.C:
		}
		now := e.now()
		for _, c := range e.conns {
			for i := range c.slots {
				s := &c.slots[i]
				if st := s.st.Load(); st&1 == 1 && now-s.startNs.Load() > limit {
					c.completeErr(int32(i), st>>1, CodeTimeout, "no reply within the client timeout", now, true)
				}
			}
		}
	}
}

// close cuts every connection and stops the background goroutines. Fetches
// still in flight are completed as canceled. It is idempotent.
func (e *engine) close() {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		for _, c := range e.conns {
			c.close()
		}
		for _, c := range e.conns {
			<-c.readerDone
		}
		close(e.stopBG)
		e.bg.Wait()
	})
}

// connDied is called once per connection when its reader stops.
func (e *engine) connDied() {
	if e.live.Add(-1) == 0 {
		close(e.allDead)
	}
}
