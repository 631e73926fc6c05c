// Package metrics holds the pipeline's Prometheus metrics and the
// operational HTTP endpoints every server role serves: /metrics, /healthz
// (the process is alive) and /readyz (NATS is connected and the streams are
// reachable).
//
// One Metrics per process owns one *prometheus.Registry (never the global
// default registry). Each role owns its metrics: it declares them, with its
// recording methods, in its own metrics.go and registers them through Part
// on first use (origin.MetricsOf, executor.MetricsOf, and the runtime's and the
// /call caller's own), so a process exposes only the roles it runs and every
// instance of a role in a process shares one part. A nil *Metrics (or a nil
// part) turns every recording method into a no-op. This package keeps the
// shared plumbing: the registry and its handler, LatencyBuckets, the
// {outcome,code} counters (OutcomeCounters, one child per broker.Codes), the
// jobs-stream watcher (WatchQueue), readiness and the ops server.
//
// The recording methods are on the hot path (the pipeline targets more than
// 10,000 jobs/s on two cores): label children are resolved once, when a part
// is created, and recording a job costs a few atomic adds and no allocation.
// Labels are low-cardinality by construction: wire error codes, phases,
// function names and delegation paths — never URLs, job ids or origin ids.
//
// # Metric names
//
// A role's metrics are listed, and their family names exported as
// constants, in the package that defines them (the dashboard reads the names
// from there):
//
//   - pipeline_origin_* and pipeline_phase_seconds: package origin
//     (origin/metrics.go, type origin.Metrics, constants origin.Metric*).
//   - pipeline_executor_*: package executor (executor/metrics.go, type
//     executor.Metrics, constants executor.Metric*).
//
// Jobs stream (WatchQueue, read from the jobs stream and its per-origin
// consumers, cached for a second; MetricJobsQueueDepth and
// MetricJobsAckPending):
//
//	pipeline_jobs_queue_depth                                   jobs waiting for an executor
//	pipeline_jobs_ack_pending                                   jobs delivered and not yet acknowledged
//
// RPC (Part: the caller's in origin/caller_metrics.go, the runtime's in
// runtime/metrics.go):
//
//	pipeline_rpc_calls_total{fn,via="direct|nats|http",outcome} calls made by the /call caller
//	pipeline_rpc_seconds{fn,via}                                caller-side call latency (histogram)
//	pipeline_rpc_served_total{fn,via="nats|http",outcome}       calls served by the runtime
//	pipeline_rpc_serve_seconds{fn,via}                          runtime-side processing time (histogram)
//
// plus the standard go_* and process_* collectors.
package metrics
