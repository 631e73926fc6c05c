package executor

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"
)

// RetryPolicy retries failed fetches inside one delivery: connect failures
// and 502/503/504 responses, with exponential backoff and full jitter, for
// idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) — other methods
// only when the job asks (retry:true). Each attempt has the job's full
// timeout. The zero value retries twice (3 attempts) from 100 ms up to 2 s.
type RetryPolicy struct {
	// Attempts is the total number of tries. 0 means 3; 1 disables retries.
	Attempts int `yaml:"attempts"`
	// BaseDelay is the first backoff. 0 means 100 ms.
	BaseDelay time.Duration `yaml:"base_delay"`
	// MaxDelay caps one backoff. 0 means 2 s.
	MaxDelay time.Duration `yaml:"max_delay"`
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = 3
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 2 * time.Second
	}
	return p
}

// delay is the backoff before try number n (1-based retry count), with full
// jitter: uniform in [0, min(max, base·2^(n-1))].
func (p RetryPolicy) delay(n int) time.Duration {
	base, max := p.BaseDelay, p.MaxDelay
	d := base << (n - 1)
	if d > max || d <= 0 {
		d = max
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retryable reports whether a fetch outcome is worth another try at once
// (after a backoff). A 503 carrying Retry-After is not: the executor waits
// as it asks (waitRetryAfter), holding no slot.
func retryable(resp *Response, err error) bool {
	if err != nil {
		// Only connect failures: nothing reached the target. A timeout may
		// have, and a blocked URL, a redirect loop or oversized headers
		// never get better.
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	switch resp.Status {
	case http.StatusServiceUnavailable:
		_, ra := parseRetryAfter(resp.Headers["retry-after"], time.Now())
		return !ra
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// fetchWithRetry runs t's fetch under the retry policy and t's host's
// circuit breaker: an open circuit ends it at once with circuit_open.
// Every request sent counts in t.p.attempts. Shutdown (e.inflight) or a
// cancel of the job (ctx) interrupts the fetch and the backoff.
func (e *Executor) fetchWithRetry(ctx context.Context, t *task) (*Response, error) {
	job, log, host := t.job, t.log, t.p.host
	cb := e.pol.circuits
	n := e.cfg.Retry.Attempts
	if !idempotent(job.Method) && !job.Retry {
		n = 1
	}
	for try := 1; ; try++ {
		if host != "" && !cb.allow(host) {
			e.m.Held(WaitCircuit)
			e.m.hostEvent(host, hostCircuitRefused)
			return nil, cb.openError(host)
		}
		resp, err := e.fetcher.Fetch(ctx, job)
		t.p.attempts++
		if failed, known := hostOutcome(resp, err); known && host != "" && ctx.Err() == nil {
			cb.record(host, failed)
		}
		if try >= n || !retryable(resp, err) {
			return resp, err
		}
		d := e.cfg.Retry.delay(try)
		ev := log.Debug().Int("try", try).Dur("backoff", d)
		if err != nil {
			ev = ev.Err(logSafe(err))
		} else {
			ev = ev.Int("status", resp.Status)
		}
		ev.Msg("fetch failed; retrying")
		e.m.Retry()
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return resp, err
		}
	}
}
