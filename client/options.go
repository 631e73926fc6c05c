package client

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"
)

// Defaults of the options.
const (
	// DefaultMaxInFlight is below the origin's default per-connection
	// max_in_flight (1024), so a client alone on its connection is never
	// refused with queue_full for having too many fetches open.
	DefaultMaxInFlight      = 1000
	DefaultDialTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMinBackoff       = 50 * time.Millisecond
	DefaultMaxBackoff       = 5 * time.Second
	DefaultReconnectTimeout = time.Minute
	// DefaultIdleTimeout is over twice the origin's ping interval (30 s).
	DefaultIdleTimeout = 75 * time.Second
	// DefaultMaxResponseBytes bounds a frame read from the origin and a
	// Call reply body.
	DefaultMaxResponseBytes = 64 << 20
)

// Option configures a Client in Dial. Options validate their arguments:
// Dial fails with the option's error.
type Option func(*options) error

type options struct {
	token            string
	tls              *tls.Config
	maxInFlight      int
	dialTimeout      time.Duration
	writeTimeout     time.Duration
	minBackoff       time.Duration
	maxBackoff       time.Duration
	reconnectTimeout time.Duration
	idleTimeout      time.Duration
	maxResponse      int64
	httpClient       *http.Client
}

func defaultOptions() options {
	return options{
		maxInFlight:      DefaultMaxInFlight,
		dialTimeout:      DefaultDialTimeout,
		writeTimeout:     DefaultWriteTimeout,
		minBackoff:       DefaultMinBackoff,
		maxBackoff:       DefaultMaxBackoff,
		reconnectTimeout: DefaultReconnectTimeout,
		idleTimeout:      DefaultIdleTimeout,
		maxResponse:      DefaultMaxResponseBytes,
	}
}

// WithToken sends token as "Authorization: Bearer <token>" on the
// WebSocket handshake and on every Call.
func WithToken(token string) Option {
	return func(o *options) error {
		if token == "" {
			return fmt.Errorf("client: WithToken: empty token")
		}
		o.token = token
		return nil
	}
}

// WithTLSConfig sets the TLS configuration for wss:// and https://
// connections. The config is cloned.
func WithTLSConfig(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("client: WithTLSConfig: nil config")
		}
		o.tls = c.Clone()
		return nil
	}
}

// WithMaxInFlight caps the fetches a client has open (started and not yet
// finished or abandoned). Go and Fetch block while the cap is reached, until
// a fetch finishes or their context ends. Default DefaultMaxInFlight; keep it
// at or below the origin's max_in_flight per connection.
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("client: WithMaxInFlight(%d): must be at least 1", n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithDialTimeout bounds one connection attempt, WebSocket handshake and
// hello frame included. Default DefaultDialTimeout.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("client: WithDialTimeout(%s): must be positive", d)
		}
		o.dialTimeout = d
		return nil
	}
}

// WithWriteTimeout bounds writing one frame. A write that times out (the
// origin stopped reading: read-side backpressure that does not end) drops
// the connection, and the client reconnects. Default DefaultWriteTimeout.
func WithWriteTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("client: WithWriteTimeout(%s): must be positive", d)
		}
		o.writeTimeout = d
		return nil
	}
}

// WithReconnectBackoff sets the wait between reconnection attempts: min
// after the first failure, doubling up to max, each with up to 50% random
// jitter. Defaults DefaultMinBackoff and DefaultMaxBackoff.
func WithReconnectBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		if min <= 0 || max < min {
			return fmt.Errorf("client: WithReconnectBackoff(%s, %s): want 0 < min <= max", min, max)
		}
		o.minBackoff, o.maxBackoff = min, max
		return nil
	}
}

// WithReconnectTimeout sets how long fetches wait for a lost connection to
// come back. Past it they fail with ErrDisconnected, as do new calls until
// the client reconnects (it keeps trying). Default DefaultReconnectTimeout.
func WithReconnectTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("client: WithReconnectTimeout(%s): must be positive", d)
		}
		o.reconnectTimeout = d
		return nil
	}
}

// WithIdleTimeout drops and re-dials a connection on which nothing (no
// frame, not even one of the origin's pings) arrived for d: a peer that
// vanished without closing the TCP connection. Default DefaultIdleTimeout;
// keep it above the origin's ping interval.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("client: WithIdleTimeout(%s): must be positive", d)
		}
		o.idleTimeout = d
		return nil
	}
}

// WithMaxResponseBytes bounds a frame read from the origin (a result with
// its body) and a Call reply. Default DefaultMaxResponseBytes.
func WithMaxResponseBytes(n int64) Option {
	return func(o *options) error {
		if n < 1<<10 {
			return fmt.Errorf("client: WithMaxResponseBytes(%d): must be at least 1024", n)
		}
		o.maxResponse = n
		return nil
	}
}

// WithHTTPClient sets the HTTP client Call uses. If not set, Call uses its
// own client with the TLS config of WithTLSConfig and no overall timeout
// (the call's context bounds it).
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("client: WithHTTPClient: nil client")
		}
		o.httpClient = c
		return nil
	}
}
