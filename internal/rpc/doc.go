// Package rpc implements synchronous function delegation (PROTOCOL.md §3):
// the runtime functions echo, transform and compute, the NATS micro service
// "runtime" that serves them over request-reply, the same functions over
// plain HTTP, and the Caller, the thin stub an origin mounts at /call/ to run
// a function inline (via=direct), over NATS (via=nats) or over HTTP
// (via=http).
//
// # Functions
//
//   - echo: any bytes → the same bytes.
//   - transform: {"data":"<string>"} → {"data":"<upper-cased>","length":<bytes>},
//     upper-casing per character as strings.ToUpper does.
//   - compute: {"data":"<string>","rounds":N} → {"digest":"<hex>"}, SHA-256
//     applied N times (h1 = sha256(data), hk = sha256(h(k-1))).
//
// Call (or Limits.Call) runs a function inline. Bad input yields an *Error
// whose Code is the HTTP-style status (400 bad input, 404 unknown function,
// 413 payload too large); the same code travels in the micro error headers
// over NATS and as the HTTP status with a {"error":"..."} body over HTTP.
//
// # Service
//
// NewService registers the micro service "runtime" with endpoints
// <prefix>.rpc.echo|transform|compute in queue group "runtime", so that every
// process running it shares the load and `nats micro ls|info|stats` shows
// it. A micro endpoint delivers its requests one at a time, so the Service
// hands each request to a bounded pool of worker goroutines that run the
// function and publish the reply; a process therefore uses all its cores.
//
// Shutdown order inside Service.Stop: stop the micro service (its
// subscriptions drain) and flush so the server stops routing requests here,
// stop accepting work into the pool, let the workers finish and reply to
// every queued request, then return. Requests still delivered by a draining
// subscription afterwards are served inline.
//
// # HTTP
//
// NewHTTPHandler serves POST /rpc/<fn>; HTTPServer runs it on a listen
// address (default 127.0.0.1:8788).
//
// # Caller
//
// Caller is an http.Handler for POST /call/<fn>?via=direct|nats|http that
// replies with the function's body unchanged; Caller.Call is the same
// without HTTP in front. Delegation failures map to 502 (no runtime reachable)
// and 504 (timeout).
package rpc
