// Package metrics holds the pipeline's Prometheus metrics and the
// operational HTTP endpoints every server role serves: /metrics, /healthz
// (the process is alive) and /readyz (NATS is connected and the streams are
// reachable).
//
// One Metrics per process owns one *prometheus.Registry (never the global
// default registry). Roles reach their own part through nil-safe accessors:
// Metrics.Origin and Metrics.Executor register that role's metrics on first
// use (the runtime and the origin's /call caller own theirs through Part), so a process exposes only the roles it runs, and a
// nil *Metrics (or a nil part) turns every recording method into a no-op.
//
// The recording methods are on the hot path (the pipeline targets more than
// 10,000 jobs/s on two cores): label children are resolved once, when a part
// is created, and recording a job costs a few atomic adds and no allocation.
// Labels are low-cardinality by construction: wire error codes, phases,
// function names and delegation paths — never URLs, job ids or origin ids.
//
// # Metric names
//
// Origin (Origin):
//
//	pipeline_origin_fetches_total{outcome="result|error",code}  start-fetch requests by final frame
//	pipeline_origin_jobs_enqueued_total                         jobs stored in JetStream
//	pipeline_origin_duplicates_suppressed_total                 redelivered results dropped
//	pipeline_origin_ws_connections                              open WebSocket sessions
//	pipeline_origin_inflight_fetches                            accepted fetches without a final frame
//	pipeline_origin_executors_seen                              distinct executors in results of the last minute
//	pipeline_phase_seconds{phase="enqueue|queue|fetch|total"}   per-phase latency (histogram)
//
// Executor (Executor):
//
//	pipeline_executor_jobs_total{outcome="result|error",code}   jobs finished by this process
//	pipeline_executor_inflight                                  jobs being fetched
//	pipeline_executor_redeliveries_total                        jobs received with a delivery count above 1
//	pipeline_executor_fetch_retries_total                       in-process fetch retries
//	pipeline_executor_dead_letters_total                        jobs moved to the dead-letter stream
//	pipeline_executor_publish_failures_total                    results that could not be stored
//	pipeline_executor_fetch_seconds                             outbound fetch time, retries included (histogram)
//
// Jobs stream (WatchQueue, read from the shared consumer, cached for a second):
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
