package client

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// MaxDelay is the longest Request.Delay the origin accepts (§1.1).
const MaxDelay = 24 * time.Hour

// Request is an outbound HTTP fetch for the pipeline to make.
type Request struct {
	// URL is the absolute http(s) URL to fetch. Required.
	URL string
	// Method defaults to GET.
	Method string
	// Headers are sent with the fetch.
	Headers map[string]string
	// Body is sent with the fetch (base64 on the wire when not UTF-8).
	Body []byte
	// Timeout bounds the outbound fetch, rounded down to milliseconds; 0
	// uses the executor's default.
	Timeout time.Duration
	// Key is the idempotency key (1..128 printable ASCII characters): the
	// origin runs at most one job per key within its key window. If empty,
	// the client generates a random key.
	Key string
	// Delay makes the job wait at least this long before an executor may
	// run it (0..MaxDelay, rounded down to milliseconds).
	Delay time.Duration
}

// Result is a finished fetch. A fetch that reached the target and got an
// HTTP error status is a Result with that Status, not an error.
type Result struct {
	Status    int
	Headers   map[string]string
	Body      []byte
	Truncated bool // the body was cut at the executor's limit
	Attempt   int
	Executor  string
	Job       string
	Key       string
	// Duplicate is set when the origin answered that Key was already
	// known, so this result is that of an earlier job. After a reconnect
	// that re-sent an unconfirmed fetch it may be the client's own first
	// attempt.
	Duplicate bool
	Timing    Timing
}

// Timing is how long the phases of a fetch took, in milliseconds, as the
// origin measured them (PROTOCOL.md §1). A result collected after a
// reconnect has only queue and fetch times.
type Timing struct {
	EnqueueMS, QueueMS, FetchMS, TotalMS, DelayMS float64
}

// Pending is a fetch started with Go. Its methods are safe for concurrent
// use.
type Pending struct {
	c    *Client
	key  string
	enq  chan struct{} // closed when the origin confirmed the fetch
	done chan struct{}
	once sync.Once
	res  *Result
	err  error

	// Guarded by c.mu.
	sf        wire.StartFetch // ID is the frame id of the start-fetch last sent
	id        string          // current frame id (start-fetch or get-result)
	job       string
	confirmed bool // enqueued or pending seen: ask by key after a drop
	attach    bool // started by Attach: always asked for by key
	dup       bool
}

// Go starts a fetch and returns without waiting for its result. It blocks
// while the client has its maximum of fetches open (WithMaxInFlight), or
// ctx ends (then it returns ctx's error); ctx does not bound the fetch
// itself. It fails with ErrClosed after Close, ErrDisconnected while the
// client is past its reconnect timeout, and an *Error with CodeBadRequest
// for a request the client can tell is invalid (bad key, delay, no URL).
// Every fetch that Go returns finishes with exactly one result or error
// (see Pending), unless abandoned.
func (c *Client) Go(ctx context.Context, req Request) (*Pending, error) {
	sf, key, err := startFrame(req)
	if err != nil {
		return nil, err
	}
	p := &Pending{c: c, key: key, enq: make(chan struct{}), done: make(chan struct{})}
	return p, c.start(ctx, p, func(id string) ([]byte, error) {
		sf.ID = id
		p.sf = sf
		return sf.Encode()
	})
}

// Attach follows a job started earlier under key, by this or another
// client (e.g. before a restart of the caller): it sends get-result by key
// (PROTOCOL.md §1.1) and returns a Pending that finishes with the job's
// result, re-attaching after drops like any fetch. An unknown key finishes
// with an *Error of CodeNotFound, one whose result is no longer kept with
// CodeResultExpired. It blocks and fails like Go.
func (c *Client) Attach(ctx context.Context, key string) (*Pending, error) {
	if !wire.ValidID(key) {
		return nil, &Error{Code: CodeBadRequest, Message: "key must be 1..128 printable ASCII characters"}
	}
	p := &Pending{c: c, key: key, attach: true, enq: make(chan struct{}), done: make(chan struct{})}
	return p, c.start(ctx, p, func(id string) ([]byte, error) {
		gr := wire.GetResult{ID: id, Key: key}
		return gr.Encode()
	})
}

// start takes a slot for p, registers it under a new frame id and sends
// the frame that frame(id) encodes, or leaves that to the reconnect when
// the client is disconnected.
func (c *Client) start(ctx context.Context, p *Pending, frame func(id string) ([]byte, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.doneCh():
		return ErrClosed
	}
	// p is not shared yet: encode outside the lock.
	p.id = c.newID()
	b, err := frame(p.id)
	if err != nil {
		<-c.sem
		return err
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		<-c.sem
		return ErrClosed
	case c.gaveUp:
		c.mu.Unlock()
		<-c.sem
		return ErrDisconnected
	}
	c.byID[p.id] = p
	cn := c.cn
	c.mu.Unlock()
	if cn != nil {
		// A failed write closes the socket; the reconnect re-sends it.
		_ = cn.write(b, c.opts.writeTimeout)
	}
	return nil
}

// Fetch starts a fetch and waits for its result. The origin's error frames
// are returned as *Error (e.g. CodeInvalidURL, CodeBlockedDestination,
// CodeTimeout). CodeQueueFull means the origin refused the fetch (too many
// in flight on the connection, its rate limit, or a full jobs stream); the
// client does not retry it, so back off before trying again. While the
// origin applies read-side backpressure (it stops reading until this client
// has read its replies) sending blocks instead, up to the write timeout.
// When ctx ends first it returns ctx's error and
// stops waiting; the job is NOT canceled on the origin (use Cancel, or give a
// Key and collect the result again). Other failures are those of Go and
// ErrClosed, ErrDisconnected.
func (c *Client) Fetch(ctx context.Context, req Request) (*Result, error) {
	p, err := c.Go(ctx, req)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// doneCh is closed by Close.
func (c *Client) doneCh() <-chan struct{} { return c.ctx.Done() }

// startFrame validates req and builds its start-fetch frame (without id).
func startFrame(req Request) (wire.StartFetch, string, error) {
	sf := wire.StartFetch{URL: req.URL, Method: req.Method, Headers: req.Headers,
		TimeoutMS: req.Timeout.Milliseconds(), DelayMS: req.Delay.Milliseconds(), Key: req.Key}
	bad := func(format string, args ...any) (wire.StartFetch, string, error) {
		return sf, "", &Error{Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
	}
	if req.URL == "" {
		return bad("missing URL")
	}
	if req.Timeout < 0 {
		return bad("negative timeout")
	}
	if req.Delay < 0 || req.Delay > MaxDelay {
		return bad("delay must be 0..%s", MaxDelay)
	}
	if sf.Key == "" {
		k, err := newKey()
		if err != nil {
			return sf, "", err
		}
		sf.Key = k
	} else if !wire.ValidID(sf.Key) {
		return bad("key must be 1..128 printable ASCII characters")
	}
	if len(req.Body) > 0 {
		if utf8.Valid(req.Body) {
			sf.Body = string(req.Body)
		} else {
			sf.Body, sf.BodyEncoding = base64.StdEncoding.EncodeToString(req.Body), wire.EncodingBase64
		}
	}
	return sf, sf.Key, nil
}

// decodeResult turns a result frame into a Result.
func decodeResult(f *wire.Frame, key string) (*Result, error) {
	body, err := f.DecodeBody()
	if err != nil {
		return nil, fmt.Errorf("client: result of job %s: %w", f.Job, err)
	}
	h, err := f.DecodeHeaders()
	if err != nil {
		return nil, fmt.Errorf("client: result of job %s: %w", f.Job, err)
	}
	t := f.Timing
	return &Result{
		Status: f.Status, Headers: h, Body: body, Truncated: f.Truncated, Attempt: f.Attempt,
		Executor: string(f.Executor), Job: string(f.Job), Key: key,
		Timing: Timing{EnqueueMS: t.EnqueueMS, QueueMS: t.QueueMS, FetchMS: t.FetchMS, TotalMS: t.TotalMS, DelayMS: t.DelayMS},
	}, nil
}

// finish completes the fetch once and frees its slot.
func (p *Pending) finish(res *Result, err error) {
	p.once.Do(func() {
		if res != nil {
			p.c.mu.Lock()
			res.Duplicate = p.dup
			if res.Job == "" {
				res.Job = p.job
			}
			p.c.mu.Unlock()
		}
		p.res, p.err = res, err
		close(p.done)
		<-p.c.sem
	})
}

// Enqueued is closed once the origin has confirmed the fetch: its job is
// stored (Job is then set) and survives this client's connection. It is
// never closed for a fetch the origin refused; select on Done too.
func (p *Pending) Enqueued() <-chan struct{} { return p.enq }

// Done is closed when the fetch has finished (with a result or an error).
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result waits for the fetch to finish and returns its result or error
// (see Fetch for the errors).
func (p *Pending) Result() (*Result, error) {
	<-p.done
	return p.res, p.err
}

// Wait is Result bounded by ctx: when ctx ends first it abandons the fetch
// (see Abandon) and returns ctx's error, unless the fetch finished
// meanwhile.
func (p *Pending) Wait(ctx context.Context) (*Result, error) {
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
	}
	p.Abandon()
	<-p.done
	if p.err == ErrAbandoned {
		return nil, ctx.Err()
	}
	return p.res, p.err
}

// Abandon stops tracking the fetch and frees its slot; it finishes with
// ErrAbandoned unless it had finished already. The job itself goes on at the
// origin (use Cancel to stop it).
func (p *Pending) Abandon() {
	p.c.mu.Lock()
	if p.c.byID[p.id] == p {
		delete(p.c.byID, p.id)
	}
	p.c.mu.Unlock()
	p.finish(nil, ErrAbandoned)
}

// Key returns the fetch's idempotency key (the caller's or a generated one).
func (p *Pending) Key() string { return p.key }

// Job returns the origin's job id once the origin confirmed the fetch, or
// "" before.
func (p *Pending) Job() string {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.job
}

// Cancel cancels the fetch's job on the origin, by key; see Client.Cancel.
// The fetch then finishes with an *Error of CodeCanceled.
func (p *Pending) Cancel(ctx context.Context) error {
	return p.c.Cancel(ctx, Key(p.key))
}
