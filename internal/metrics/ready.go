package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotConnected is reported by Readiness.Check while a NATS connection is
// not connected (reconnecting, or closed).
var ErrNotConnected = errors.New("nats not connected")

// ReadinessConfig says what a role needs to be ready.
type ReadinessConfig struct {
	// Conns must all be connected. At least one is required.
	Conns []*nats.Conn
	// JS reads stream info; required when Streams is not empty.
	JS jetstream.JetStream
	// Streams must be reachable (their info readable) through JS.
	Streams []string
	// Consumers must be reachable (their info readable) through JS: for a
	// role whose permissions allow its own consumer's info but not the
	// stream's (an origin and the results stream).
	Consumers []ConsumerRef
	// CacheTTL is how long a stream check result is reused. If zero, 1 s.
	CacheTTL time.Duration
	// Timeout bounds one stream check. If zero, 1 s.
	Timeout time.Duration
}

// ConsumerRef names a durable consumer of a stream.
type ConsumerRef struct {
	Stream, Consumer string
}

// Readiness answers whether a role can do its work: every NATS connection
// is connected and every stream is reachable. The connection state is read
// on every check; the stream checks are cached for CacheTTL so probes and
// scrapes do not load JetStream. It is safe for concurrent use.
type Readiness struct {
	cfg ReadinessConfig

	mu  sync.Mutex // held during a stream check: concurrent probes share it
	at  time.Time
	err error
}

// NewReadiness returns a Readiness for cfg. It fails when cfg has no
// connection, or streams without a JetStream handle.
func NewReadiness(cfg ReadinessConfig) (*Readiness, error) {
	if len(cfg.Conns) == 0 {
		return nil, errors.New("readiness: no NATS connection")
	}
	for _, nc := range cfg.Conns {
		if nc == nil {
			return nil, errors.New("readiness: nil NATS connection")
		}
	}
	if len(cfg.Streams)+len(cfg.Consumers) > 0 && cfg.JS == nil {
		return nil, errors.New("readiness: streams or consumers to check but no JetStream handle")
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	return &Readiness{cfg: cfg}, nil
}

// Check returns nil when the role is ready, otherwise why not:
// ErrNotConnected (wrapped) for a connection down, or the wrapped error of
// the stream or consumer that could not be read. ctx bounds those checks with
// cfg.Timeout. A nil *Readiness is always ready.
func (r *Readiness) Check(ctx context.Context) error {
	if r == nil {
		return nil
	}
	for _, nc := range r.cfg.Conns {
		if !nc.IsConnected() {
			return fmt.Errorf("%w (%s)", ErrNotConnected, nc.Status())
		}
	}
	if len(r.cfg.Streams)+len(r.cfg.Consumers) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < r.cfg.CacheTTL {
		return r.err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	r.err = nil
	for _, name := range r.cfg.Streams {
		if _, err := r.cfg.JS.Stream(ctx, name); err != nil {
			r.err = fmt.Errorf("stream %s unreachable: %w", name, err)
			break
		}
	}
	for _, c := range r.cfg.Consumers {
		if r.err != nil {
			break
		}
		if _, err := r.cfg.JS.Consumer(ctx, c.Stream, c.Consumer); err != nil {
			r.err = fmt.Errorf("consumer %s of stream %s unreachable: %w", c.Consumer, c.Stream, err)
		}
	}
	r.at = time.Now()
	return r.err
}

// ServeHTTP answers GET /readyz: 200 "ready" or 503 "not ready: <reason>".
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	WriteReady(w, r.Check(req.Context()))
}

// WriteReady writes a readiness answer for err (nil: ready).
func WriteReady(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Healthz answers GET /healthz: 200 "ok" while the process serves HTTP.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}
