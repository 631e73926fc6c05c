package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// Client is a connection to one origin. Create it with Dial, release it
// with Close. It is safe for concurrent use by multiple goroutines.
type Client struct {
	opts     options
	wsURL    string
	httpBase string
	header   http.Header
	dialer   websocket.Dialer
	httpc    *http.Client

	// idPrefix makes frame ids unique per client; ids count up from 1.
	idPrefix string
	ids      atomic.Uint64

	sem chan struct{} // one token per open fetch

	ctx    context.Context // canceled by Close: ends dials and waits
	cancel context.CancelFunc
	wg     sync.WaitGroup // the connection loop and re-attach writers

	mu     sync.Mutex
	cn     *conn                    // nil while disconnected
	up     chan struct{}            // closed while cn != nil
	byID   map[string]*Pending      // open fetches by their current frame id
	ctl    map[string]chan ctlReply // cancel waiters by frame id
	gaveUp bool                     // reconnecting for longer than the reconnect timeout
	closed bool
	hello  Hello
}

// Hello is what the origin said in its hello frame.
type Hello struct {
	Origin  string
	Version string
}

// ctlReply is the origin's answer to a cancel frame, or the error that
// ended the wait (ErrConnectionLost, ErrClosed).
type ctlReply struct {
	typ string
	err error
}

// conn is one WebSocket connection. Its reader is the client's connection
// loop; writes are serialized by wmu.
type conn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

// write sends one text frame within timeout. On failure it closes the
// socket, so the reader ends and the client reconnects.
func (cn *conn) write(b []byte, timeout time.Duration) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(timeout))
	if err := cn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		_ = cn.ws.Close()
		return fmt.Errorf("client: write frame: %w", err)
	}
	return nil
}

// Dial connects to the origin's WebSocket at rawURL (ws://HOST:PORT/ws or
// wss://...) and reads its hello frame. ctx bounds this first connection
// only; reconnections are bounded by the options. It fails when the URL is
// not ws(s), an option is invalid, or the origin cannot be reached or does
// not greet with hello (an HTTP 401 means a missing or wrong token).
func Dial(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("client: dial %q: %w", rawURL, err)
	}
	httpURL := *u
	switch u.Scheme {
	case "ws":
		httpURL.Scheme = "http"
	case "wss":
		httpURL.Scheme = "https"
	default:
		return nil, fmt.Errorf("client: dial %q: scheme must be ws or wss", rawURL)
	}
	httpURL.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ws")
	httpURL.RawQuery, httpURL.Fragment, httpURL.RawPath = "", "", ""

	var pfx [6]byte
	if _, err := rand.Read(pfx[:]); err != nil {
		return nil, fmt.Errorf("client: random id prefix: %w", err)
	}
	c := &Client{
		opts:     o,
		wsURL:    rawURL,
		httpBase: httpURL.String(),
		header:   http.Header{},
		dialer: websocket.Dialer{
			HandshakeTimeout: o.dialTimeout,
			TLSClientConfig:  o.tls,
			ReadBufferSize:   32 << 10,
			WriteBufferSize:  16 << 10,
			Proxy:            http.ProxyFromEnvironment,
		},
		idPrefix: base64.RawURLEncoding.EncodeToString(pfx[:]) + "-",
		sem:      make(chan struct{}, o.maxInFlight),
		up:       make(chan struct{}),
		byID:     map[string]*Pending{},
		ctl:      map[string]chan ctlReply{},
	}
	if o.token != "" {
		c.header.Set("Authorization", "Bearer "+o.token)
	}
	c.httpc = o.httpClient
	if c.httpc == nil {
		c.httpc = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     o.tls,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	cn, hello, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.hello = hello
	c.cn = cn
	close(c.up)
	c.wg.Add(1)
	go c.run(cn)
	return c, nil
}

// Hello returns what the origin said in the hello frame of the current (or
// last) connection.
func (c *Client) Hello() Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

// dial opens one connection and reads the hello frame.
func (c *Client) dial(ctx context.Context) (*conn, Hello, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
	defer cancel()
	ws, resp, err := c.dialer.DialContext(ctx, c.wsURL, c.header)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, Hello{}, fmt.Errorf("client: dial %s: %w (HTTP %s)", c.wsURL, err, resp.Status)
		}
		return nil, Hello{}, fmt.Errorf("client: dial %s: %w", c.wsURL, err)
	}
	ws.SetReadLimit(c.opts.maxResponse)
	deadline, _ := ctx.Deadline()
	_ = ws.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	_, msg, err := ws.ReadMessage()
	stop()
	if err != nil {
		_ = ws.Close()
		return nil, Hello{}, fmt.Errorf("client: read hello from %s: %w", c.wsURL, err)
	}
	var f wire.Frame
	if err := wire.Parse(msg, &f); err != nil || !f.Is(wire.TypeHello) {
		_ = ws.Close()
		return nil, Hello{}, fmt.Errorf("client: %s: first frame is not hello: %.80q", c.wsURL, msg)
	}
	idle := c.opts.idleTimeout
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(idle))
		// A failed pong shows up as a failed read or write soon enough.
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	return &conn{ws: ws}, Hello{Origin: string(f.Origin), Version: string(f.Version)}, nil
}

// newID returns a frame id unique to this client (and so per connection).
func (c *Client) newID() string {
	return c.idPrefix + strconv.FormatUint(c.ids.Add(1), 36)
}

// newKey returns a random idempotency key.
func newKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("client: random key: %w", err)
	}
	return "k-" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Close closes the connection and stops reconnecting. Fetches and cancels
// still waiting return ErrClosed; later calls too. It does not cancel jobs
// on the origin: those finish there, and another client may collect their
// results by key (Attach). Close waits for the client's goroutines to end; it is
// safe to call more than once and returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closed = true
	cn := c.cn
	open := make([]*Pending, 0, len(c.byID))
	for _, p := range c.byID {
		open = append(open, p)
	}
	c.byID = map[string]*Pending{}
	for id, ch := range c.ctl {
		ch <- ctlReply{err: ErrClosed}
		delete(c.ctl, id)
	}
	c.mu.Unlock()

	// Shutdown order: stop dialing, say goodbye on the socket (the reader
	// then ends), fail what was open, wait for the connection loop.
	c.cancel()
	if cn != nil {
		// WriteControl may run concurrently with a blocked WriteMessage.
		_ = cn.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(100*time.Millisecond))
		_ = cn.ws.Close()
	}
	for _, p := range open {
		p.finish(nil, ErrClosed)
	}
	c.wg.Wait()
	if c.opts.httpClient == nil {
		c.httpc.CloseIdleConnections()
	}
	return nil
}

// run is the connection loop: it reads cn until it fails, then reconnects
// and re-attaches the open fetches, until Close.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	for {
		c.read(cn)
		_ = cn.ws.Close()
		if cn = c.reconnect(); cn == nil {
			return
		}
	}
}

// read reads frames from cn until it fails.
func (c *Client) read(cn *conn) {
	var (
		buf bytes.Buffer
		f   wire.Frame
	)
	for {
		_ = cn.ws.SetReadDeadline(time.Now().Add(c.opts.idleTimeout))
		typ, r, err := cn.ws.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			return
		}
		if typ != websocket.TextMessage || wire.Parse(buf.Bytes(), &f) != nil {
			continue // not a frame of the protocol: nothing to act on
		}
		c.handle(&f)
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{} // do not keep one large result's buffer
		}
	}
}

// handle acts on one frame from the origin.
func (c *Client) handle(f *wire.Frame) {
	switch string(f.Type) {
	case wire.TypeEnqueued, wire.TypePending:
		c.mu.Lock()
		if p := c.byID[string(f.ID)]; p != nil {
			p.job = string(f.Job)
			if !p.confirmed {
				p.confirmed = true
				p.sf = wire.StartFetch{} // re-attached by key from now on: drop the body
				close(p.enq)
			}
			if f.Duplicate && f.Is(wire.TypeEnqueued) {
				p.dup = true
			}
		}
		c.mu.Unlock()
	case wire.TypeResult:
		p := c.take(string(f.ID))
		if p == nil {
			return
		}
		res, err := decodeResult(f, p.key)
		p.finish(res, err)
	case wire.TypeCanceled:
		c.reply(string(f.ID), ctlReply{typ: wire.TypeCanceled})
	case wire.TypeError:
		e := &Error{Code: Code(f.Code), Message: string(f.Message), Job: string(f.Job)}
		id := string(f.ID)
		if c.reply(id, ctlReply{typ: wire.TypeError, err: e}) {
			return
		}
		c.mu.Lock()
		p := c.byID[id]
		if p == nil {
			c.mu.Unlock()
			return // about no request of ours (an empty id), or an abandoned one
		}
		delete(c.byID, id)
		c.mu.Unlock()
		if e.Job == "" {
			e.Job = p.Job()
		}
		p.finish(nil, e)
	}
}

// take removes and returns the open fetch with frame id, or nil.
func (c *Client) take(id string) *Pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.byID[id]
	if p != nil {
		delete(c.byID, id)
	}
	return p
}

// reply hands a reply to the cancel waiting under id, if any.
func (c *Client) reply(id string, r ctlReply) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.ctl[id]
	if ok {
		delete(c.ctl, id)
		ch <- r // buffered, one reply per waiter
	}
	return ok
}

// waitUp returns the current connection, waiting (bounded by ctx) while
// the client reconnects.
func (c *Client) waitUp(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, ErrClosed
		case c.cn != nil:
			cn := c.cn
			c.mu.Unlock()
			return cn, nil
		case c.gaveUp:
			c.mu.Unlock()
			return nil, ErrDisconnected
		}
		up := c.up
		c.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}
