package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// Limits of one WebSocket client connection.
const (
	// maxFrameBytes bounds a frame read from an origin; result frames carry
	// response bodies, which the origin itself bounds well below this.
	maxFrameBytes = 64 << 20
	readBufBytes  = 64 << 10
	writeBufBytes = 16 << 10
)

// A slot is one fetch position of a connection: in closed-loop mode it is
// reissued as soon as its fetch completes. Its state word packs the fetch's
// sequence number and an in-flight bit (seq<<1 | 1) so that completing a
// fetch is one compare-and-swap that a late reply for an older sequence
// number can never win.
type slot struct {
	st      atomic.Uint64
	startNs atomic.Int64 // latency origin: send time, or intended send time in open loop
	sentNs  atomic.Int64 // when the start-fetch frame was written
	enqNs   atomic.Int64 // when the enqueued frame arrived; 0 before
}

func inFlight(seq uint64) uint64 { return seq<<1 | 1 }

// sendReq asks a connection's writer to send the fetch of slot with seq.
type sendReq struct {
	slot int32
	seq  uint64
}

// client is one WebSocket connection to an origin. Its reader goroutine
// demultiplexes replies by id to slots; its writer goroutine serializes
// start-fetch frames. The slots of a connection are only ever reissued on
// that connection, so an id is resolved without any shared map.
type client struct {
	e        *engine
	idx      int
	url      string
	originID string
	version  string
	ws       *websocket.Conn

	slots []slot
	sendq chan sendReq

	dead       atomic.Bool
	closeOnce  sync.Once
	closed     chan struct{} // closed by close
	readerDone chan struct{} // closed when the reader has stopped and failed its fetches
}

// dial opens one connection and waits for the origin's hello frame.
func (e *engine) dial(ctx context.Context, origin string) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	d := websocket.Dialer{
		HandshakeTimeout: e.cfg.DialTimeout,
		ReadBufferSize:   readBufBytes,
		WriteBufferSize:  writeBufBytes,
	}
	ws, resp, err := d.DialContext(ctx, origin, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", origin, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", origin, err)
	}
	ws.SetReadLimit(maxFrameBytes)
	c := &client{
		e:          e,
		url:        origin,
		ws:         ws,
		closed:     make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	deadline, _ := ctx.Deadline()
	if err := ws.SetReadDeadline(deadline); err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("dial %s: %w", origin, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	_, msg, err := ws.ReadMessage()
	stop()
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("read hello from %s: %w", origin, err)
	}
	var f wire.Frame
	if err := wire.Parse(msg, &f); err != nil || !f.Is(wire.TypeHello) {
		_ = ws.Close()
		return nil, fmt.Errorf("origin %s: first frame is not a hello frame: %.80q", origin, msg)
	}
	c.originID, c.version = string(f.Origin), string(f.Version)
	if err := ws.SetReadDeadline(time.Time{}); err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("dial %s: %w", origin, err)
	}
	return c, nil
}

// dialAll opens cfg.Connections connections round robin over the origins,
// spreads the concurrency over those that answered, and starts their
// goroutines. It fails with ErrNoOrigin when none answered.
func (e *engine) dialAll(ctx context.Context) error {
	n := e.cfg.Connections
	got := make([]*client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = e.dial(ctx, e.cfg.Origins[i%len(e.cfg.Origins)])
		}()
	}
	wg.Wait()

	var failures []error
	seen := map[string]bool{}
	for i, c := range got {
		if c != nil {
			c.idx = len(e.conns)
			e.conns = append(e.conns, c)
			continue
		}
		o := e.cfg.Origins[i%len(e.cfg.Origins)]
		if !seen[o] {
			seen[o] = true
			failures = append(failures, errs[i])
			e.dialErrs[o] = errs[i].Error()
			e.log.Warn().Err(errs[i]).Str("origin", o).Msg("origin connection failed")
		}
	}
	if len(e.conns) == 0 {
		return fmt.Errorf("%w: %w", ErrNoOrigin, errors.Join(failures...))
	}
	if ctx.Err() != nil {
		for _, c := range e.conns {
			_ = c.ws.Close()
		}
		return fmt.Errorf("loadgen: dial: %w", ctx.Err())
	}

	per, extra := e.cfg.Concurrency/len(e.conns), e.cfg.Concurrency%len(e.conns)
	e.live.Store(int32(len(e.conns)))
	for i, c := range e.conns {
		k := per
		if i < extra {
			k++
		}
		c.slots = make([]slot, k)
		// Room for one request per slot plus stale ones left by timeouts.
		c.sendq = make(chan sendReq, 2*k+16)
		e.bg.Add(1)
		go c.writeLoop()
		go c.readLoop()
	}
	return nil
}

// issue starts the fetch of slot s. intended is the open-loop send time and
// ignored in closed-loop mode. It never blocks.
func (c *client) issue(p *phase, s int32, intended int64) {
	sl := &c.slots[s]
	now := c.e.now()
	start := now
	if p.open {
		start = intended
	}
	p.wg.Add(1)
	p.issued.Add(1)
	seq := sl.st.Load()>>1 + 1
	sl.startNs.Store(start)
	sl.sentNs.Store(now)
	sl.enqNs.Store(0)
	sl.st.Store(inFlight(seq))
	// Pairs with die: either we see dead, or die sees the slot in flight.
	if c.dead.Load() {
		c.completeErr(s, seq, c.lostCode(), "connection closed", now, false)
		return
	}
	select {
	case c.sendq <- sendReq{slot: s, seq: seq}:
	default:
		c.completeErr(s, seq, CodeTimeout, "connection writer stalled", now, false)
	}
}

// finish marks the fetch (s, seq) complete. It reports false when that fetch
// was already completed (a reply after a timeout, a duplicate).
func (c *client) finish(s int32, seq uint64) (*slot, bool) {
	if s < 0 || int(s) >= len(c.slots) {
		return nil, false
	}
	sl := &c.slots[s]
	return sl, sl.st.CompareAndSwap(inFlight(seq), seq<<1)
}

// completeOK records a result frame for (s, seq).
func (c *client) completeOK(s int32, seq uint64, f *wire.Frame, now int64) {
	sl, ok := c.finish(s, seq)
	if !ok {
		return
	}
	p := c.e.phase.Load()
	p.ok.Add(1)
	if p.stats != nil {
		p.stats.recordOK(now-p.startNs, now-sl.startNs.Load(), sl.sentNs.Load(), sl.enqNs.Load(), now, f)
	}
	c.next(p, s, now, true)
}

// completeErr records an error for (s, seq); reissue is false when the
// failure is the connection's own and another fetch on it would fail too.
func (c *client) completeErr(s int32, seq uint64, code, msg string, now int64, reissue bool) {
	if _, ok := c.finish(s, seq); !ok {
		return
	}
	p := c.e.phase.Load()
	p.errs.Add(1)
	if p.stats != nil {
		p.stats.recordErr(now-p.startNs, code, msg)
	}
	c.next(p, s, now, reissue)
}

// next hands slot s on: reissued at once in closed-loop mode while fetches
// remain, returned to the free list in open-loop mode.
func (c *client) next(p *phase, s int32, now int64, reissue bool) {
	for {
		last := p.lastDoneNs.Load()
		if now <= last || p.lastDoneNs.CompareAndSwap(last, now) {
			break
		}
	}
	if reissue && !c.dead.Load() {
		if p.open {
			p.free <- slotRef{c, s} // never blocks: holds every slot at most once
		} else if p.take() {
			c.issue(p, s, 0)
		}
	}
	p.wg.Done()
}

func (c *client) lostCode() string {
	if c.e.closing.Load() {
		return CodeCanceled
	}
	return CodeConnectionLost
}

// readLoop reads frames until the connection fails, then fails the fetches
// still in flight on it.
func (c *client) readLoop() {
	defer close(c.readerDone)
	var (
		buf     bytes.Buffer
		f       wire.Frame
		lastLog time.Time
	)
	for {
		typ, r, err := c.ws.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			c.die(err)
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		now := c.e.now()
		if err := wire.Parse(buf.Bytes(), &f); err != nil {
			if time.Since(lastLog) > time.Second {
				lastLog = time.Now()
				c.e.log.Warn().Str("origin", c.url).Str("frame", truncate(buf.Bytes(), 120)).Msg("unreadable frame")
			}
			continue
		}
		c.handle(&f, now, &lastLog)
	}
}

// handle routes one parsed frame to the fetch it is about.
func (c *client) handle(f *wire.Frame, now int64, lastLog *time.Time) {
	switch string(f.Type) {
	case wire.TypeEnqueued, wire.TypeResult, wire.TypeError:
	default:
		return // hello or an extension this client does not use
	}
	id, err := parseRequestID(f.ID)
	if err != nil || id.conn != c.idx {
		if f.Is(wire.TypeError) {
			// An error about no fetch of ours, e.g. bad_request with an empty id.
			if p := c.e.phase.Load(); p != nil && p.stats != nil {
				p.stats.recordUnmatched(string(f.Code))
			}
			if time.Since(*lastLog) > time.Second {
				*lastLog = time.Now()
				c.e.log.Warn().Str("origin", c.url).Bytes("code", f.Code).Bytes("message", f.Message).
					Msg("error frame without a known id")
			}
		}
		return
	}
	s := int32(id.slot)
	switch string(f.Type) {
	case wire.TypeEnqueued:
		if s >= 0 && int(s) < len(c.slots) && c.slots[s].st.Load() == inFlight(id.seq) {
			c.slots[s].enqNs.Store(now)
		}
	case wire.TypeResult:
		c.completeOK(s, id.seq, f, now)
	case wire.TypeError:
		code := string(f.Code)
		if code == "" {
			code = "unknown"
		}
		c.completeErr(s, id.seq, code, string(f.Message), now, true)
	}
}

// writeLoop writes start-fetch frames for the slots queued on sendq.
func (c *client) writeLoop() {
	defer c.e.bg.Done()
	open := c.e.cfg.Rate > 0
	suffix := c.e.frameSuffix
	buf := make([]byte, 0, len(wire.StartFetchPrefix)+96+len(suffix))
	for {
		var req sendReq
		select {
		case <-c.closed:
			return
		case req = <-c.sendq:
		}
		sl := &c.slots[req.slot]
		if sl.st.Load() != inFlight(req.seq) {
			continue // timed out before it could be sent
		}
		buf = append(buf[:0], wire.StartFetchPrefix...)
		idStart := len(buf)
		buf = appendRequestID(buf, c.idx, int(req.slot), req.seq)
		if c.e.keyPrefix != nil {
			// A key made of the run's nonce and the id: unique per fetch.
			idEnd := len(buf)
			buf = append(buf, c.e.keyPrefix...)
			buf = append(buf, buf[idStart:idEnd]...)
		}
		buf = append(buf, suffix...)
		now := c.e.now()
		sl.sentNs.Store(now)
		if !open {
			sl.startNs.Store(now)
		}
		_ = c.ws.SetWriteDeadline(c.e.base.Add(time.Duration(now) + c.e.cfg.Timeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, buf); err != nil {
			// The reader notices the closed socket and fails what is in flight.
			c.close()
			return
		}
	}
}

// die marks the connection dead and fails every fetch in flight on it.
func (c *client) die(err error) {
	c.dead.Store(true)
	code := c.lostCode()
	if code == CodeConnectionLost {
		c.e.log.Warn().Err(err).Str("origin", c.url).Msg("connection lost")
	}
	c.close()
	now := c.e.now()
	for i := range c.slots {
		if st := c.slots[i].st.Load(); st&1 == 1 {
			c.completeErr(int32(i), st>>1, code, "connection closed", now, false)
		}
	}
	c.e.connDied()
}

// close sends a normal close frame (best effort) and closes the socket.
func (c *client) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(100*time.Millisecond))
		_ = c.ws.Close()
	})
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
