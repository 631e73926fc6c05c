// Package loadgen measures the pipeline from the outside, the way a client
// sees it: it opens WebSocket sessions to one or more origins, sends
// start-fetch frames (PROTOCOL.md §1), and records end-to-end latency, the
// phases reported by the pipeline, throughput and errors by code.
//
// Two load models are supported:
//
//   - Closed loop (Config.Rate == 0): exactly Config.Concurrency fetches are
//     in flight; each completion immediately issues the next fetch on the same
//     slot. Latency is measured from the moment a start-fetch frame is written.
//   - Open loop (Config.Rate > 0): fetches are issued on a fixed schedule of
//     Rate per second, and latency is measured from each request's intended
//     send time, so a stalled pipeline cannot hide its stall by slowing the
//     load down (no coordinated omission). Config.Concurrency caps the number
//     of fetches in flight; a request waiting for a free slot keeps aging.
//
// Run performs one measured run, RunSweep several at increasing concurrency,
// and RunBaseline the same fetches made directly over HTTP. Reports render as
// a text table (Report.WriteText), the JSON object of PROTOCOL.md §5
// (Report.WriteJSON) and a self-contained HTML page with SVG plots
// (WriteHTML).
//
// Latencies are kept in HDR histograms (see Histogram); the engine avoids
// per-request goroutines and allocations so that the generator is not the
// bottleneck of the system it measures.
package loadgen
