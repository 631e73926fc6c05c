package executor

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
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

// retryable reports whether a fetch outcome is worth another try.
func retryable(resp *Response, err error) bool {
	if err != nil {
		// Only connect failures: nothing reached the target. A timeout may
		// have, and a blocked URL, a redirect loop or oversized headers
		// never get better.
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	switch resp.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// fetchWithRetry runs the job's fetch under the retry policy. Shutdown
// (e.inflight) interrupts the backoff.
func (e *Executor) fetchWithRetry(ctx context.Context, job *broker.Job, log zerolog.Logger) (*Response, error) {
	n := e.cfg.Retry.Attempts
	if !idempotent(job.Method) && !job.Retry {
		n = 1
	}
	for try := 1; ; try++ {
		resp, err := e.fetcher.Fetch(ctx, job)
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
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return resp, err
		}
	}
}
