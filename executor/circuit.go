package executor

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
)

// Circuit breaker per destination host, per executor process: each process
// learns on its own that a host is down (after CircuitConfig.Failures
// consecutive failures of its own requests). Sharing the state through NATS
// would let one process's view close the circuit for all, at a KV round
// trip per failure; a host that is down is found by every process within
// Failures requests anyway.

// maxCircuitHosts bounds the hosts a process tracks: only hosts with a
// current failure streak (or an open circuit) have an entry, and beyond
// this many new streaks are not tracked until entries go.
const maxCircuitHosts = 10_000

// circuitState is one host's breaker state.
type circuitState int

const (
	circuitClosed circuitState = iota
	circuitOpen
	circuitHalfOpen // cooldown over: one probe is let through
)

// String names the state as the dashboard shows it.
func (s circuitState) String() string {
	switch s {
	case circuitOpen:
		return "open"
	case circuitHalfOpen:
		return "half_open"
	}
	return "closed"
}

// circuit is one host's breaker.
type circuit struct {
	fails  int
	state  circuitState
	until  time.Time // open: when the next probe may go; half-open: when a lost probe is given up
	opened time.Time
}

// circuits holds the breakers of the hosts with failures. A nil *circuits
// (breaker disabled) allows everything. It is safe for concurrent use.
type circuits struct {
	failures int
	cooldown time.Duration
	now      func() time.Time
	onChange func(host string, open bool) // called under mu: must not call back

	tracked atomic.Int32 // len(hosts): with none, no lock is taken
	mu      sync.Mutex
	hosts   map[string]*circuit
}

func newCircuits(cfg CircuitConfig, onChange func(string, bool)) *circuits {
	if cfg.Failures < 0 {
		return nil
	}
	return &circuits{failures: cfg.Failures, cooldown: cfg.Cooldown, now: time.Now, onChange: onChange,
		hosts: map[string]*circuit{}}
}

// allow reports whether a request to host may go now. An open circuit
// whose cooldown is over lets exactly one request through (the probe) and
// refuses the others until the probe's outcome is recorded, or, if it is
// never recorded (its executor stopped), for another cooldown.
func (c *circuits) allow(host string) bool {
	if c == nil || c.tracked.Load() == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.hosts[host]
	if b == nil || b.state == circuitClosed {
		return true
	}
	now := c.now()
	if now.Before(b.until) {
		return false
	}
	b.state = circuitHalfOpen
	b.until = now.Add(c.cooldown)
	return true
}

// isOpen reports whether host's jobs would be refused now (open and still
// cooling down, or half-open with its probe out), without taking a probe.
func (c *circuits) isOpen(host string) bool {
	if c == nil || c.tracked.Load() == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.hosts[host]
	return b != nil && b.state != circuitClosed && c.now().Before(b.until)
}

// record notes the outcome of one request to host: failed (a connect
// failure, reset, timeout or 5xx) or not. A success closes the circuit; a
// failing probe opens it again for a cooldown; Failures failures in a row
// open it.
func (c *circuits) record(host string, failed bool) {
	if c == nil || (!failed && c.tracked.Load() == 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.hosts[host]
	if !failed {
		if b != nil {
			if b.state != circuitClosed {
				c.onChange(host, false)
			}
			delete(c.hosts, host)
			c.tracked.Add(-1)
		}
		return
	}
	if b == nil {
		if len(c.hosts) >= maxCircuitHosts {
			return
		}
		b = &circuit{}
		c.hosts[host] = b
		c.tracked.Add(1)
	}
	now := c.now()
	switch b.state {
	case circuitClosed:
		b.fails++
		if b.fails >= c.failures {
			b.state, b.until, b.opened = circuitOpen, now.Add(c.cooldown), now
			c.onChange(host, true)
		}
	default: // a failed probe, or a request that was out when the circuit opened
		b.state, b.until = circuitOpen, now.Add(c.cooldown)
	}
}

// openError is the error of a job refused by host's open circuit.
func (c *circuits) openError(host string) *broker.Error {
	return broker.Errorf(broker.CodeCircuitOpen, "circuit open for %s: %d consecutive failures; a probe goes after %v",
		host, c.failures, c.cooldown)
}

// states returns the hosts whose circuit is not closed, with their state.
func (c *circuits) states() map[string]string {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for h, b := range c.hosts {
		if b.state != circuitClosed {
			out[h] = b.state.String()
		}
	}
	return out
}

// hostOutcome says whether a fetch outcome tells anything about the host
// (known) and whether it counts against the host's circuit (failed):
// connect failures, resets and timeouts (fetch_failed, timeout) and 5xx
// responses fail; any other response succeeds; refused URLs and policy
// denials say nothing about the host.
func hostOutcome(resp *Response, err error) (failed, known bool) {
	if err != nil {
		switch broker.CodeOf(err) {
		case broker.CodeFetchFailed, broker.CodeTimeout:
			return true, true
		}
		return false, false
	}
	return resp.Status >= http.StatusInternalServerError, true
}
