package executor

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"
)

// Destination politeness settings (issue #15): per-host request rates that
// hold across every executor process, the longest Retry-After honoured, and
// a per-host circuit breaker.

// DefaultRetryAfterMax is Config.RetryAfterMax in DefaultConfig.
const DefaultRetryAfterMax = 60 * time.Second

// Destination is the politeness setting of one destination host.
type Destination struct {
	// Host is "host" (any port) or "host:port", as the destination policy
	// matches them; case does not matter.
	Host string `yaml:"host"`
	// Rate is the requests per second to this host across all executor
	// processes sharing the NATS server (cluster-wide, see ratelimit.go).
	// 0 means no rate limit.
	Rate float64 `yaml:"rate"`
	// Burst is how many requests may go at once after the host was idle,
	// on top of Rate. 0 means 1.
	Burst int `yaml:"burst"`
	// Concurrency overrides Config.PerHostConcurrency for this host (per
	// executor process). 0 means the executor-wide setting.
	Concurrency int `yaml:"concurrency"`
}

// CircuitConfig configures the per-host circuit breaker (circuit.go).
type CircuitConfig struct {
	// Failures is how many consecutive connect failures, timeouts or 5xx
	// responses from a host open its circuit. 0 means 20; negative
	// disables the breaker.
	Failures int `yaml:"failures"`
	// Cooldown is how long a circuit stays open before one probe request
	// is let through; its success closes the circuit. 0 means 30 s.
	Cooldown time.Duration `yaml:"cooldown"`
}

func (c CircuitConfig) withDefaults() CircuitConfig {
	if c.Failures == 0 {
		c.Failures = 20
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	return c
}

// ErrBadDestination wraps every error Validate returns for the politeness
// settings.
var ErrBadDestination = errors.New("invalid destination setting")

// Validate checks the politeness settings and returns an error naming the
// offending key (e.g. "executor.destinations[1].rate: must not be
// negative"), wrapping ErrBadDestination. The yaml loader refuses unknown
// keys itself (KnownFields).
func (c Config) Validate() error {
	seen := map[string]int{}
	for i, d := range c.Destinations {
		key := fmt.Sprintf("executor.destinations[%d]", i)
		h := normalHost(d.Host)
		switch {
		case h == "":
			return fmt.Errorf("%s.host: required: %w", key, ErrBadDestination)
		case d.Rate < 0:
			return fmt.Errorf("%s.rate: %v must not be negative: %w", key, d.Rate, ErrBadDestination)
		case d.Burst < 0:
			return fmt.Errorf("%s.burst: %d must not be negative: %w", key, d.Burst, ErrBadDestination)
		case d.Concurrency < 0:
			return fmt.Errorf("%s.concurrency: %d must not be negative: %w", key, d.Concurrency, ErrBadDestination)
		}
		if strings.ContainsAny(h, "/?#@ ") {
			return fmt.Errorf("%s.host: %q: want host or host:port: %w", key, d.Host, ErrBadDestination)
		}
		if j, dup := seen[h]; dup {
			return fmt.Errorf("%s.host: %q repeats executor.destinations[%d]: %w", key, d.Host, j, ErrBadDestination)
		}
		seen[h] = i
	}
	if c.RetryAfterMax < 0 {
		return fmt.Errorf("executor.retry_after_max: %v must not be negative: %w", c.RetryAfterMax, ErrBadDestination)
	}
	if c.Circuit.Cooldown < 0 {
		return fmt.Errorf("executor.circuit.cooldown: %v must not be negative: %w", c.Circuit.Cooldown, ErrBadDestination)
	}
	return nil
}

// normalHost lower-cases a configured host and drops the brackets of a
// bare IPv6 address.
func normalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return h
}

// destinations looks up a job's destination (host:port as
// Fetcher.destination returns it) in the configured list: an exact
// host:port entry first, then a host-only entry. It is read-only once built
// and safe for concurrent use.
type destinations map[string]Destination

func newDestinations(list []Destination) destinations {
	if len(list) == 0 {
		return nil
	}
	m := make(destinations, len(list))
	for _, d := range list {
		d.Host = normalHost(d.Host)
		if d.Burst <= 0 {
			d.Burst = 1
		}
		m[d.Host] = d
	}
	return m
}

// of returns the setting for hostport, if any.
func (m destinations) of(hostport string) (Destination, bool) {
	if m == nil {
		return Destination{}, false
	}
	if d, ok := m[hostport]; ok {
		return d, true
	}
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return Destination{}, false
	}
	d, ok := m[h]
	return d, ok
}

// concurrency returns the per-host cap of hostport: the destination's own
// Concurrency when set, else def.
func (m destinations) concurrency(hostport string, def int) int {
	if d, ok := m.of(hostport); ok && d.Concurrency > 0 {
		return d.Concurrency
	}
	return def
}

// newHostGateFor returns the per-host concurrency gate for cfg, or nil when
// no host has a cap: Config.PerHostConcurrency for every host, overridden by
// a destination's Concurrency.
func newHostGateFor(cfg Config) *hostGate {
	dests := newDestinations(cfg.Destinations)
	override := false
	for _, d := range dests {
		override = override || d.Concurrency > 0
	}
	if cfg.PerHostConcurrency <= 0 && !override {
		return nil
	}
	def := cfg.PerHostConcurrency
	if def <= 0 {
		def = math.MaxInt
	}
	g := newHostGate(def, cfg.Concurrency*parkedPerSlot)
	if override {
		g.limitOf = func(host string) int { return dests.concurrency(host, def) }
	}
	return g
}
