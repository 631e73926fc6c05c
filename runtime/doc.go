// Package runtime is the pipeline's shared function runtime (PROTOCOL.md
// §3): a registry of functions, the built-ins echo, transform and compute,
// the NATS micro service "runtime" that serves them over request-reply, and
// the same functions over plain HTTP.
//
// # Functions
//
// A Func turns request bytes into reply bytes. NewRegistry returns a
// Registry holding the built-ins; Register adds user functions under names
// that are NATS subject tokens:
//
//	reg := runtime.NewRegistry(runtime.Limits{})
//	err := reg.Register("hello", func(ctx context.Context, req []byte) ([]byte, error) {
//		if len(req) == 0 {
//			return nil, broker.Errorf(broker.CodeBadRequest, "empty name")
//		}
//		return append([]byte("hello, "), req...), nil
//	})
//
// The built-ins:
//
//   - echo: any bytes → the same bytes.
//   - transform: {"data":"<string>"} → {"data":"<upper-cased>","length":<bytes>},
//     upper-casing per character as strings.ToUpper does.
//   - compute: {"data":"<string>","rounds":N} → {"digest":"<hex>"}, SHA-256
//     applied N times (h1 = sha256(data), hk = sha256(h(k-1))).
//
// # Errors
//
// A function reports bad input with a *broker.Error of code
// broker.CodeBadRequest. Every error maps to an HTTP-style status, sent in
// the micro error headers (Nats-Service-Error, Nats-Service-Error-Code) over
// NATS and as the HTTP status with a {"error":"..."} body over HTTP: 400 bad
// input, 404 unknown function (ErrUnknownFunction), 413 payload over
// Limits.MaxPayload (checked before the function runs), 504 CodeTimeout, 500
// anything else.
//
// # Service
//
// New and Service.Start register the micro service "runtime" with one
// endpoint <prefix>.rpc.<fn> per registered function in queue group
// broker.RPCQueueGroup, so that every process running it shares the load
// and `nats micro ls|info|stats` shows it. A micro endpoint delivers its
// requests one at a time, so the Service hands each request to a bounded
// pool of worker goroutines that run the function and publish the reply; a
// process therefore uses all its cores. Service.Shutdown documents the
// shutdown order.
//
// # HTTP
//
// NewHTTPHandler serves POST /rpc/<fn>; HTTPServer runs it on a listen
// address (default 127.0.0.1:8788), next to extra ops routes.
//
// # Lifecycle
//
// Service and HTTPServer share one shape: a constructor returning the
// concrete type, Start(ctx), Shutdown(ctx). Start after Shutdown fails with
// ErrStopped, a second Start with ErrStarted.
//
// The package name is the role's (DESIGN.md); import the standard library's
// runtime under another name next to it.
package runtime
