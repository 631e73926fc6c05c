package runtime

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/pipeline-dev/pipeline/broker"
)

// Func is a runtime function: it turns a request body into a reply body.
//
// A Func reports bad input with a *broker.Error of code
// broker.CodeBadRequest (broker.Errorf(broker.CodeBadRequest, ...)): callers
// then get status 400 with its message, in the micro error headers over NATS
// and as HTTP 400 {"error":"<message>"} over HTTP. CodeTooLarge maps to 413
// and CodeTimeout (or a context deadline) to 504; any other error maps to
// 500 with the error's text.
//
// req is at most the registry's Limits.MaxPayload bytes. It is only valid
// during the call: a Func must not keep it, but may return it (or a part of
// it) as its reply. ctx ends when the caller no longer waits (over HTTP, when
// the client goes away) or when the Service shuts down without time left to
// finish. A Func may be called concurrently from many goroutines.
type Func func(ctx context.Context, req []byte) ([]byte, error)

// Default limits.
const (
	// DefaultMaxPayload is the default cap on a request body: 1 MiB.
	DefaultMaxPayload = 1 << 20
	// DefaultMaxRounds is the default (and PROTOCOL.md §3) cap on compute's
	// rounds.
	DefaultMaxRounds = 1_000_000
)

// Limits bound what the functions of a Registry accept. The zero value uses
// the defaults.
type Limits struct {
	// MaxPayload caps a request body in bytes, for every function; a larger
	// body fails with status 413 before the function runs. If zero or
	// negative, DefaultMaxPayload (1 MiB) is used.
	MaxPayload int
	// MaxRounds caps the built-in compute's rounds; more fails with status
	// 400. If zero or negative, DefaultMaxRounds (1,000,000) is used.
	MaxRounds int
}

// withDefaults fills unset fields.
func (l Limits) withDefaults() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxRounds <= 0 {
		l.MaxRounds = DefaultMaxRounds
	}
	return l
}

// Registry maps function names to Funcs. NewRegistry fills it with the
// built-ins echo, transform and compute; Register adds user functions. A
// Service serves every function of its registry over NATS (one endpoint
// <prefix>.rpc.<name> each), the HTTP side serves them at POST /rpc/<name>,
// and Call runs them inline (an origin's via=direct).
//
// Register functions before starting a Service on the registry: from then
// on the registry is sealed and Register fails with ErrRegistrySealed. A
// Registry is safe for concurrent use.
type Registry struct {
	limits Limits

	mu     sync.RWMutex
	fns    map[string]Func
	names  []string // in registration order
	sealed bool
}

// NewRegistry returns a registry holding the built-in functions echo,
// transform and compute, with limits l (the zero value uses the defaults).
func NewRegistry(l Limits) *Registry {
	r := &Registry{limits: l.withDefaults(), fns: make(map[string]Func)}
	maxRounds := r.limits.MaxRounds
	r.add(FnEcho, Echo)
	r.add(FnTransform, Transform)
	r.add(FnCompute, func(ctx context.Context, req []byte) ([]byte, error) {
		return compute(ctx, req, maxRounds)
	})
	return r
}

func (r *Registry) add(name string, fn Func) {
	r.fns[name] = fn
	r.names = append(r.names, name)
}

// Register adds function fn under name. name becomes the last token of the
// function's NATS subject (<prefix>.rpc.<name>) and of its HTTP path
// (/rpc/<name>), so it must be a valid subject token: 1 to 64 letters,
// digits, '-' or '_'. Register fails for an invalid name or a nil fn, with
// ErrDuplicateFunction when name is taken (the built-ins included), and with
// ErrRegistrySealed once a Service serves the registry.
func (r *Registry) Register(name string, fn Func) error {
	if err := broker.ValidateToken("function name", name); err != nil {
		return fmt.Errorf("runtime: register: %w", err)
	}
	if fn == nil {
		return fmt.Errorf("runtime: register %q: nil Func", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed {
		return fmt.Errorf("runtime: register %q: %w", name, ErrRegistrySealed)
	}
	if _, dup := r.fns[name]; dup {
		return fmt.Errorf("runtime: register %q: %w", name, ErrDuplicateFunction)
	}
	r.add(name, fn)
	return nil
}

// Names returns the registered function names in registration order, the
// built-ins first.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.names)
}

// Has reports whether a function is registered under name.
func (r *Registry) Has(name string) bool {
	_, ok := r.lookup(name)
	return ok
}

// Limits returns the registry's limits, defaults filled in.
func (r *Registry) Limits() Limits { return r.limits }

// Call runs function name on req inline and returns its reply, which may
// alias req (echo returns it as is). It fails with an error wrapping
// ErrUnknownFunction (status 404) when name is not registered, a
// *broker.Error of code CodeTooLarge (413) when req is over
// Limits.MaxPayload, or whatever the function returns (see Func).
func (r *Registry) Call(ctx context.Context, name string, req []byte) ([]byte, error) {
	fn, ok := r.lookup(name)
	if !ok {
		return nil, &unknownFunctionError{fn: name, known: r.Names()}
	}
	if len(req) > r.limits.MaxPayload {
		return nil, tooLarge(len(req), r.limits.MaxPayload)
	}
	return fn(ctx, req)
}

func (r *Registry) lookup(name string) (Func, bool) {
	r.mu.RLock()
	fn, ok := r.fns[name]
	r.mu.RUnlock()
	return fn, ok
}

// seal fixes the set of functions (a Service is about to serve them) and
// returns their names.
func (r *Registry) seal() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealed = true
	return slices.Clone(r.names)
}
