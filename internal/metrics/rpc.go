package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome label values of the RPC counters, derived from the HTTP-style
// status of a call (rpc.Error codes).
const (
	RPCOK          = "ok"          // 2xx, or no error
	RPCBadInput    = "bad_input"   // 4xx: bad body, unknown function or via, too large
	RPCCancelled   = "cancelled"   // 499: the caller went away
	RPCUnavailable = "unavailable" // 502/503: no runtime reachable
	RPCTimeout     = "timeout"     // 504
	RPCError       = "error"       // anything else (500)
)

// rpcFns, rpcVias and rpcOutcomes are the label values, in index order;
// anything unknown is counted as "other".
func rpcFns() []string  { return []string{"echo", "transform", "compute", "other"} }
func rpcVias() []string { return []string{"direct", "nats", "http", "other"} }
func rpcOutcomes() []string {
	return []string{RPCOK, RPCBadInput, RPCCancelled, RPCUnavailable, RPCTimeout, RPCError}
}

func rpcFnIndex(fn string) int {
	switch fn {
	case "echo":
		return 0
	case "transform":
		return 1
	case "compute":
		return 2
	}
	return 3
}

func rpcViaIndex(via string) int {
	switch via {
	case "direct":
		return 0
	case "nats":
		return 1
	case "http":
		return 2
	}
	return 3
}

// rpcOutcomeIndex maps an HTTP-style status (0 meaning success) to an
// outcome index.
func rpcOutcomeIndex(status int) int {
	switch {
	case status == 0 || status >= 200 && status < 300:
		return 0
	case status == 499:
		return 2
	case status >= 400 && status < 500:
		return 1
	case status == 502 || status == 503:
		return 3
	case status == 504:
		return 4
	}
	return 5
}

// rpcSide is one {fn,via,outcome} counter and {fn,via} histogram pair.
// The children of a (fn, via) cell are resolved on its first call and kept,
// so /metrics shows only the paths in use and later calls do not allocate.
type rpcSide struct {
	calls   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	cells   [4][4]atomic.Pointer[rpcCell]
}

// rpcCell holds the resolved children of one (fn, via).
type rpcCell struct {
	calls   [6]prometheus.Counter // by outcome index
	seconds prometheus.Observer
}

func newRPCSide(reg prometheus.Registerer, counter, hist, counterHelp, histHelp string) *rpcSide {
	s := &rpcSide{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "rpc", Name: counter, Help: counterHelp,
		}, []string{"fn", "via", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "rpc", Name: hist, Help: histHelp, Buckets: LatencyBuckets(),
		}, []string{"fn", "via"}),
	}
	reg.MustRegister(s.calls, s.seconds)
	return s
}

// cell returns the children of (fn i, via j), resolving them once.
func (s *rpcSide) cell(i, j int) *rpcCell {
	if c := s.cells[i][j].Load(); c != nil {
		return c
	}
	fn, via := rpcFns()[i], rpcVias()[j]
	c := &rpcCell{seconds: s.seconds.WithLabelValues(fn, via)}
	for k, out := range rpcOutcomes() {
		c.calls[k] = s.calls.WithLabelValues(fn, via, out)
	}
	// A concurrent first call resolves the same children; either cell works.
	s.cells[i][j].CompareAndSwap(nil, c)
	return s.cells[i][j].Load()
}

func (s *rpcSide) record(fn, via string, status int, d time.Duration) {
	c := s.cell(rpcFnIndex(fn), rpcViaIndex(via))
	c.calls[rpcOutcomeIndex(status)].Inc()
	c.seconds.Observe(d.Seconds())
}

// RPC holds the metrics of synchronous function calls: the caller side
// (the origin's /call) and the serving side (the runtime). A nil *RPC
// records nothing. Its methods are safe for concurrent use.
type RPC struct {
	caller *rpcSide
	served *rpcSide
}

func newRPC(reg prometheus.Registerer) *RPC {
	return &RPC{
		caller: newRPCSide(reg, "calls_total", "seconds",
			"Function calls made by the caller (/call/<fn>), by function, delegation path and outcome.",
			"Caller-side latency of function calls, delegation included."),
		served: newRPCSide(reg, "served_total", "serve_seconds",
			"Function calls served by the runtime, by function, transport (nats or http) and outcome.",
			"Runtime-side processing time of a served call (function and reply)."),
	}
}

// Called records one call made by a caller: function fn through via, ended
// with status (0 or 2xx: success; else the rpc.Error code), taking d.
func (r *RPC) Called(fn, via string, status int, d time.Duration) {
	if r != nil {
		r.caller.record(fn, via, status, d)
	}
}

// Served records one call served by the runtime over via (nats or http).
func (r *RPC) Served(fn, via string, status int, d time.Duration) {
	if r != nil {
		r.served.record(fn, via, status, d)
	}
}
