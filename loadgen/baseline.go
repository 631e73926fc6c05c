package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BaselineConfig describes a baseline run: the same fetches as a pipeline
// run, made directly over HTTP from the load generator's host.
type BaselineConfig struct {
	TargetURL string // required
	Method    string // If empty, GET.
	Headers   map[string]string
	Body      string
	// Concurrency is the number of requests in flight (with Rate: the cap).
	// If zero, DefaultConcurrency.
	Concurrency int
	// Rate, when positive, sends this many requests per second on a fixed
	// schedule (open loop, like the pipeline run it is compared with), and
	// latency is measured from each request's intended send time.
	Rate float64
	// Requests is the number of measured requests. If zero, DefaultRequests.
	Requests int
	// Warmup is the number of unmeasured requests sent first.
	Warmup int
	// Timeout bounds one request. If zero, DefaultTimeout.
	Timeout time.Duration
	// Progress and Interval work as in Config.
	Progress func(Progress)
	Interval time.Duration
}

// BaselineResult is the outcome of RunBaseline.
type BaselineResult struct {
	Latency  *Histogram // successful requests (any HTTP status), request start → body read
	Requests int64
	OK       int64
	Errors   int64 // transport errors
	Duration time.Duration
}

// RunBaseline fetches the target directly, closed loop, with keep-alive
// connections (one per request in flight), reading every body completely.
// Transport errors are counted, not returned; RunBaseline returns an error
// only for a bad configuration or when ctx ends, in which case the partial
// result is returned too.
func RunBaseline(ctx context.Context, cfg BaselineConfig) (*BaselineResult, error) {
	if cfg.TargetURL == "" {
		return nil, errors.New("loadgen: baseline: no target URL")
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultRequests
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultProgressInterval
	}
	if _, err := http.NewRequest(cfg.Method, cfg.TargetURL, nil); err != nil {
		return nil, fmt.Errorf("loadgen: baseline: %w", err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout}

	if cfg.Warmup > 0 {
		if _, err := baselinePhase(ctx, client, cfg, "warmup", cfg.Warmup, nil); err != nil {
			return nil, err
		}
	}
	res := &BaselineResult{Latency: NewHistogram()}
	return baselinePhase(ctx, client, cfg, "baseline", cfg.Requests, res)
}

// baselinePhase sends n requests with cfg.Concurrency workers and records
// them into res when it is non-nil.
func baselinePhase(ctx context.Context, client *http.Client, cfg BaselineConfig, name string, n int, res *BaselineResult) (*BaselineResult, error) {
	if res == nil {
		res = &BaselineResult{Latency: NewHistogram()}
	}
	var (
		tokens           atomic.Int64
		issued, ok, errs atomic.Int64
		wg               sync.WaitGroup
	)
	tokens.Store(int64(n))
	start := time.Now()

	done := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			t := time.NewTicker(cfg.Interval)
			defer t.Stop()
			for final := false; !final; {
				select {
				case <-t.C:
				case <-done:
					final = true
				}
				i, o, e := issued.Load(), ok.Load(), errs.Load()
				cfg.Progress(Progress{Phase: name, Elapsed: time.Since(start), Issued: i, OK: o, Errors: e,
					InFlight: i - o - e, Requests: int64(n), Done: final})
			}
		}()
	}

	for range min(cfg.Concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				left := tokens.Add(-1)
				if left < 0 {
					break
				}
				t0 := time.Now()
				if cfg.Rate > 0 {
					// Request i is due at start + i/rate; a late request is
					// charged from when it was due (no coordinated omission).
					i := int64(n) - 1 - left
					t0 = start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
					if d := time.Until(t0); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
						}
					}
				}
				issued.Add(1)
				if err := fetchOnce(ctx, client, cfg); err != nil {
					errs.Add(1)
					continue
				}
				res.Latency.Record(time.Since(t0))
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(done)
	progressWG.Wait()
	res.Duration = time.Since(start)
	res.Requests, res.OK, res.Errors = issued.Load(), ok.Load(), errs.Load()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: baseline: %w", err)
	}
	return res, nil
}

// fetchOnce makes one request and reads its body to the end.
func fetchOnce(ctx context.Context, client *http.Client, cfg BaselineConfig) error {
	var body io.Reader
	if cfg.Body != "" {
		body = strings.NewReader(cfg.Body)
	}
	req, err := http.NewRequestWithContext(ctx, cfg.Method, cfg.TargetURL, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, v := range cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", cfg.TargetURL, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("read body of %s: %w", cfg.TargetURL, err)
	}
	return nil
}
