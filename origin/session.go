package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pipeline-dev/pipeline/broker"
)

const (
	pingEvery = 30 * time.Second
	pongWait  = 75 * time.Second
	// ackQueue bounds the stored-job confirmations a session waits for at
	// once; beyond it the reader waits (JetStream confirms in ~0.1 ms).
	ackQueue = 64
	// maxIdleReadBuf is the largest read buffer a session keeps between
	// frames; a larger one (a big frame) is dropped after use.
	maxIdleReadBuf = 64 << 10
)

// session is one WebSocket connection. Frames to the client go through a
// queue bounded in frames and bytes (outbox) drained by one writer
// goroutine. While the queue is past half full the session stops reading
// the client's frames, so a client that reads is never dropped because of
// replies to its own frames; a client that does not read at all fills the
// queue and is closed with 1008, so it cannot take memory or time from
// anyone else.
type session struct {
	id   string
	srv  *Server
	conn *websocket.Conn

	out outbox
	// pong is the payload of a client's ping not answered yet (the
	// writer answers it); later pings meanwhile get no pong of their own.
	pong atomic.Pointer[string]
	// writer is writerIdle, writerRunning or writerFinished (wswriter.go).
	writer atomic.Int32
	// pingDue asks the writer for a ping (the server's ping loop sets it).
	pingDue atomic.Bool
	// ponged asks the writer to extend the read deadline: a pong came.
	ponged atomic.Bool
	acks   chan *pendingFetch
	// ackRunning is set while an ackLoop goroutine runs.
	ackRunning atomic.Bool
	// follows are this connection's attachments to jobs it did not start
	// (get-result pending, duplicate keys) not yet answered, by
	// followKey; guarded by mu. They count against MaxInFlight and the
	// send queue like pending fetches, and are detached when it closes.
	follows map[string]struct{}
	done    chan struct{}

	// limiter enforces Config.RatePerConn; nil without a rate limit.
	limiter *rate.Limiter

	mu       sync.Mutex
	pending  map[string]*pendingFetch // by job id
	byClient map[string]struct{}      // client ids in flight
	closed   bool
	// closeCode and closeReason are sent in the close frame.
	closeCode   int
	closeReason string
}

// pendingFetch is a fetch accepted on this session and not yet finished.
type pendingFetch struct {
	clientID string
	jobID    string
	received time.Time
	enqueued time.Time
	fut      jetstream.PubAckFuture
	// keyed: the client named the job with a key (a duplicate is possible).
	keyed bool
	// delayed: the job waits in the delayed stream first.
	delayed bool
	// republished: the job was published again after an uncertain first
	// attempt, so a duplicate PubAck may be that attempt's.
	republished bool
	// enqueuedSent is set once the enqueued frame is queued; a result that
	// arrives before that (possible with a 0 ms target) waits in early.
	enqueuedSent bool
	early        *broker.Result
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		http.Error(w, "origin shutting down", http.StatusServiceUnavailable)
		return
	}
	s.sessMu.Lock()
	full := len(s.sessions) >= s.cfg.MaxConnections
	s.sessMu.Unlock()
	if full {
		s.m.Refused()
		if n, ok := s.fullLog.Tick(); ok {
			s.log.Warn().Int("max_connections", s.cfg.MaxConnections).Int64("refused", n).Msg("websocket refused: origin.max_connections reached (logged at most every 10 s; refused counts since the last line)")
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	proceed, refuseInFrame := s.wsAuth(w, r)
	if !proceed {
		return
	}
	if refuseInFrame {
		s.refuseInFrame(w, r)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("websocket upgrade failed")
		return
	}
	sess := &session{
		id:   nuid.Next(),
		srv:  s,
		conn: conn,
		out:  outbox{maxFrames: s.cfg.SendQueue, maxBytes: s.cfg.SendQueueBytes},
		done: make(chan struct{}),
	}
	if s.cfg.RatePerConn > 0 {
		burst := s.cfg.RateBurst
		if burst <= 0 {
			burst = max(1, int(s.cfg.RatePerConn))
		}
		sess.limiter = rate.NewLimiter(rate.Limit(s.cfg.RatePerConn), burst)
	}
	s.sessMu.Lock()
	if s.closing.Load() {
		s.sessMu.Unlock()
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "origin shutting down"), time.Now().Add(time.Second))
		conn.Close()
		return
	}
	s.sessions[sess.id] = sess
	s.sessWG.Add(1) // the reader; the writer and the ack loop run only while they have work
	s.sessMu.Unlock()
	s.m.ConnOpened()
	sess.logAt(zerolog.DebugLevel).Msg("session opened")
	sess.queue(mustJSON(helloFrame{Type: frameHello, Origin: s.cfg.ID, Version: Version}))
	// No read limit in gorilla: it would close with 1009 before this
	// session could say why. The reader bounds every frame itself.
	_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	sess.installControlHandlers()
	go sess.readLoop()
}

// clientState is the default continuation's state for a fetch of this
// session: clientState{Session: c.id} as JSON, built without reflection
// (a session id is a nuid: letters and digits, nothing to escape).
func (c *session) clientState() json.RawMessage {
	b := make([]byte, 0, len(`{"s":""}`)+len(c.id))
	b = append(b, `{"s":"`...)
	b = append(b, c.id...)
	return append(b, `"}`...)
}

// logAt starts a log line at level with the session's id and remote
// address; nil (every method a no-op) when level is off. A session keeps no
// logger of its own: a sub-logger's context buffer would cost every idle
// connection about half a kilobyte.
func (c *session) logAt(level zerolog.Level) *zerolog.Event {
	return c.srv.log.WithLevel(level).Str("session", c.id).Stringer("remote", c.conn.RemoteAddr())
}

// readLoop reads client frames until the connection fails or closes.
//
// It is the one goroutine an idle session holds, so it is kept shallow:
// while it waits for a frame, its stack (this loop, then gorilla's
// NextReader down to the netpoller) fits in the 2 KB a goroutine starts
// with, and an idle connection's stack stays that small. What a frame
// needs happens in readFrame, which returns before the next wait; a pong,
// which gorilla handles inside NextReader, only wakes the writer
// (installControlHandlers). A deeper call under NextReader would grow the
// stack to 4 KB for good: the runtime halves a stack only while a quarter
// of it is enough. The margin is small (parked, the reader uses about 1,080
// of the 1,120 bytes a 2 KB stack allows above its guard, with Go 1.26 and
// gorilla 1.5.3): keep this frame small, and check with `loadgen conns`
// (stacks 2.0 KB per connection, not 4.0).
func (c *session) readLoop() {
	// No defer, and the frame buffer made by the first frame: both would
	// take room in this frame, which is under every wait.
	var buf *bytes.Buffer
	for c.waitForRoom() {
		mt, r, err := c.conn.NextReader()
		if err != nil {
			c.readFailed(err)
			break
		}
		if !c.readFrame(mt, r, &buf) {
			break
		}
	}
	c.endReading()
}

// readFailed logs why reading ended, unless the client closed.
func (c *session) readFailed(err error) {
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
		c.logAt(zerolog.DebugLevel).Err(err).Msg("read")
	}
}

// endReading ends the session once its reader is done.
func (c *session) endReading() {
	c.close(websocket.CloseNormalClosure, "")
	c.dropFollows()
	c.srv.sessMu.Lock()
	delete(c.srv.sessions, c.id)
	c.srv.sessMu.Unlock()
	c.srv.m.ConnClosed()
	c.srv.sessWG.Done()
}

// readFrame reads one client frame of type mt from r into *bufp (made on
// first use) and acts on it. It returns false when the session is over.
func (c *session) readFrame(mt int, r io.Reader, bufp **bytes.Buffer) bool {
	cfg := &c.srv.cfg
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	received := time.Now()
	if *bufp == nil {
		*bufp = new(bytes.Buffer)
	}
	buf := *bufp
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r, int64(cfg.MaxFrameBytes)+1))
	if err != nil {
		return false
	}
	if n > int64(cfg.MaxFrameBytes) {
		// Skip the rest up to the hard cap; beyond it the frame cannot
		// be skipped cheaply and the connection is closed with 1009.
		rest, err := io.CopyN(io.Discard, r, int64(cfg.HardFrameBytes-cfg.MaxFrameBytes))
		if err != nil && !errors.Is(err, io.EOF) {
			return false
		}
		if n+rest > int64(cfg.HardFrameBytes) {
			c.overHardLimit()
			return false
		}
		c.queue(encodeError("", "", broker.Errorf(broker.CodeTooLarge, "frame larger than %d bytes", cfg.MaxFrameBytes)))
		return true
	}
	if mt == websocket.BinaryMessage {
		c.queue(encodeError("", "", broker.Errorf(broker.CodeBadRequest, "binary frames are not supported; send JSON text frames")))
		return true
	}
	if !utf8.Valid(buf.Bytes()) {
		// RFC 6455 §8.1: a text frame that is not UTF-8 fails the
		// connection (1007). It is never passed on altered.
		c.logAt(zerolog.InfoLevel).Msg("text frame is not valid UTF-8; connection closed with 1007")
		c.queue(encodeError("", "", broker.Errorf(broker.CodeBadRequest, "text frame is not valid UTF-8")))
		c.close(websocket.CloseInvalidFramePayloadData, "invalid UTF-8")
		return false
	}
	c.handleFrame(buf.Bytes(), received)
	if buf.Cap() > maxIdleReadBuf {
		*bufp = nil
	}
	return true
}

// waitForRoom is read-side backpressure: while the send queue, counting
// the replies still owed to fetches in flight (enqueued and final frame),
// is past half of its bounds, it stops reading the client's frames (TCP
// then pushes back on the client) until the writer has drained it. A
// client that reads is so never dropped because of replies to its own
// frames (only a result larger than the byte bound allows can still
// overflow it). It returns false when the session closed meanwhile.
func (c *session) waitForRoom() bool {
	if !c.congested() {
		return true
	}
	c.logAt(zerolog.DebugLevel).Msg("send queue high: pausing reads")
	drained := c.out.drainedChan()
	for c.congested() {
		select {
		case <-drained:
		case <-c.done:
			return false
		}
	}
	// The client's pings went unread meanwhile.
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	return true
}

// congested reports whether the queued frames plus the frames owed to
// fetches in flight pass half of the queue's bounds.
func (c *session) congested() bool {
	c.mu.Lock()
	owed := 2*len(c.pending) + len(c.follows)
	c.mu.Unlock()
	frames, bytes := c.out.size()
	return 2*(frames+owed) > c.out.maxFrames || 2*bytes > c.out.maxBytes
}

// overHardLimit answers a frame beyond the hard cap: one too_large error
// frame, then close 1009. It discards what the client is still sending
// (bounded in time and bytes) so closing the socket does not turn into a TCP
// reset that would destroy the close frame before the client reads it.
func (c *session) overHardLimit() {
	c.logAt(zerolog.InfoLevel).Int("hard_limit", c.srv.cfg.HardFrameBytes).Msg("frame over hard limit; connection closed with 1009")
	c.queue(encodeError("", "", broker.Errorf(broker.CodeTooLarge, "frame larger than the hard cap of %d bytes: closing", c.srv.cfg.HardFrameBytes)))
	c.close(websocket.CloseMessageTooBig, "frame too large")
	raw := c.conn.UnderlyingConn()
	_ = raw.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.CopyN(io.Discard, raw, int64(4*c.srv.cfg.HardFrameBytes))
}

// handleFrame acts on one complete text frame.
func (c *session) handleFrame(data []byte, received time.Time) {
	f, werr := parseFrame(data)
	if werr != nil {
		c.srv.m.Error(werr.Code)
		c.queue(encodeError(f.ID, "", werr))
		return
	}
	switch f.Type {
	case frameGetResult:
		c.getResult(f)
	case frameStartFetch:
		c.startFetch(f, received)
	case frameCancel:
		c.cancel(f)
	}
}

func (c *session) getResult(f *clientFrame) {
	job := f.target()
	if job == "" {
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeBadRequest, "get-result needs a job id or a key")))
		return
	}
	if !c.srv.finished.enabled() {
		c.queue(encodeError(f.ID, job, broker.Errorf(broker.CodeBadRequest, "get-result is disabled: this origin keeps no finished results (streams.result_retention < 0)")))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.replyFinished(ctx, f.ID, job) {
		return
	}
	c.follow(ctx, f.ID, job, false)
}

// follow attaches this connection, under frame id, to job, which has no
// final frame in the store: the final frame comes when the job finishes.
// For a get-result (known false) a job not in flight here is not_found, and
// an attached one is answered pending first. For a duplicate key (known: the
// jobs stream holds or held the job) the connection follows the job even if
// this process did not start it; its enqueued frame was sent. Attaching
// first and then looking at the store again catches a result that finished
// in between without answering twice.
func (c *session) follow(ctx context.Context, id, job string, known bool) {
	if c.srv.dedup.done(job) && c.srv.finished.enabled() {
		// It finished here: its stored result, or word that it is gone.
		if !c.replyFinished(ctx, id, job) {
			c.queue(encodeError(id, job, broker.Errorf(broker.CodeResultExpired, "job %q finished; its result is no longer retained", truncate(job, 64))))
		}
		return
	}
	a := attachment{sess: c, id: id}
	if !c.addFollow(job, id) {
		c.queue(encodeError(id, job, broker.Errorf(broker.CodeQueueFull, "this connection already waits for %d jobs", c.srv.cfg.MaxInFlight)))
		return
	}
	ref, found, taken := c.srv.inflight.attach(job, a, known)
	if !found && !taken {
		// Not in flight here: accepted before this origin restarted?
		if c.replyFinished(ctx, id, job) {
			c.endFollow(job, id)
			return
		}
		var ok bool
		if ref, ok = c.srv.storedJob(ctx, job); !ok {
			c.endFollow(job, id)
			c.queue(encodeError(id, job, broker.Errorf(broker.CodeNotFound, "no job %q on this origin (unknown, or past the retention window)", truncate(job, 64))))
			return
		}
		_, _, taken = c.srv.inflight.attach(job, a, true)
	}
	if !taken {
		c.endFollow(job, id)
		c.queue(encodeError(id, job, broker.Errorf(broker.CodeQueueFull, "too many connections wait for job %q", truncate(job, 64))))
		return
	}
	if !known {
		c.queue(mustJSON(pendingFrame{Type: framePending, ID: id, Job: job, State: c.srv.jobState(ctx, ref)}))
	}
	res, err := c.srv.finished.get(ctx, job)
	if err != nil && c.srv.inflight.detach(job, a) {
		c.endFollow(job, id)
		c.logAt(zerolog.WarnLevel).Err(err).Str("job", job).Msg("follow job")
		c.queue(encodeError(id, job, broker.Errorf(broker.CodeInternal, "could not read the result store")))
		return
	}
	if res != nil && c.srv.inflight.detach(job, a) {
		c.endFollow(job, id)
		c.queueFinal(id, res)
	}
}

func followKey(job, id string) string { return job + "\x00" + id }

// addFollow records an attachment of this connection to job under frame
// id; false when it already waits for MaxInFlight jobs.
func (c *session) addFollow(job, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.follows) >= c.srv.cfg.MaxInFlight {
		return false
	}
	if c.follows == nil {
		c.follows = make(map[string]struct{})
	}
	c.follows[followKey(job, id)] = struct{}{}
	return true
}

// endFollow forgets an attachment that was answered or given up.
func (c *session) endFollow(job, id string) {
	c.mu.Lock()
	delete(c.follows, followKey(job, id))
	if len(c.follows) == 0 {
		c.follows = nil
	}
	c.mu.Unlock()
}

// dropFollows detaches a closing connection from every job it waits for:
// jobs whose result never comes to this origin must not hold it.
func (c *session) dropFollows() {
	c.mu.Lock()
	keys := c.follows
	c.follows = nil
	c.mu.Unlock()
	for k := range keys {
		job, id, _ := strings.Cut(k, "\x00")
		c.srv.inflight.detach(job, attachment{sess: c, id: id})
	}
}

// replyFinished answers a get-result from the finished-results store and
// reports whether it did (the job finished within retention, or the store
// could not be read).
func (c *session) replyFinished(ctx context.Context, id, job string) bool {
	res, err := c.srv.finished.get(ctx, job)
	if err != nil {
		c.logAt(zerolog.WarnLevel).Err(err).Str("job", job).Msg("get-result")
		c.queue(encodeError(id, job, broker.Errorf(broker.CodeInternal, "could not read the result store")))
		return true
	}
	if res == nil {
		return false
	}
	c.queueFinal(id, res)
	return true
}

// queueFinal queues a finished job's final frame under id.
func (c *session) queueFinal(id string, res *broker.Result) {
	c.queue(encodeResult(id, res, Timing{
		QueueMS: ms(res.QueueDuration()),
		FetchMS: ms(time.Duration(res.FetchNanos)),
		DelayMS: float64(res.DelayMS),
	}))
}

func (c *session) startFetch(f *clientFrame, received time.Time) {
	req, werr := f.fetchRequest(c.srv.limits)
	if werr != nil {
		c.srv.m.Error(werr.Code)
		c.queue(encodeError(f.ID, "", werr))
		return
	}
	job := c.srv.newJob(req, f.ID, broker.Continuation{Name: ResultToClient, State: c.clientState()}, received)
	p := &pendingFetch{clientID: f.ID, jobID: job.ID, received: received, keyed: req.Key != "", delayed: job.DelayMS > 0}
	// Read before taking the session's lock: it may be a store read.
	finished := p.keyed && c.srv.finishedKeyed(job.ID, received)
	if p.delayed && c.srv.delayedFull(received, len(req.URL)+len(req.Body)+256) {
		c.srv.m.Error(broker.CodeQueueFull)
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeQueueFull, "the delayed-jobs store is full (streams.max_delayed_bytes); retry later")))
		return
	}

	c.mu.Lock()
	if _, dup := c.byClient[f.ID]; dup {
		c.mu.Unlock()
		c.srv.m.Error(broker.CodeBadRequest)
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeBadRequest, "id %q is already in flight on this connection", f.ID)))
		return
	}
	if c.limiter != nil && !c.limiter.AllowN(received, 1) {
		c.mu.Unlock()
		c.srv.m.Error(broker.CodeQueueFull)
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeQueueFull, "rate limit: %g fetches per second on this connection", c.srv.cfg.RatePerConn)))
		return
	}
	if len(c.pending) >= c.srv.cfg.MaxInFlight {
		c.mu.Unlock()
		c.srv.m.Error(broker.CodeQueueFull)
		c.queue(encodeError(f.ID, "", broker.Errorf(broker.CodeQueueFull, "%d fetches in flight on this connection; wait for results", c.srv.cfg.MaxInFlight)))
		return
	}
	if p.keyed {
		if _, mine := c.pending[job.ID]; mine || finished {
			// The same key twice on this connection, or a key whose job
			// finished before a restart: follow that job.
			c.mu.Unlock()
			c.duplicate(f.ID, job.ID)
			return
		}
	}
	// Registered before publishing: the result may arrive before the PubAck.
	if c.pending == nil { // allocated on first use: idle sessions stay small
		c.pending = make(map[string]*pendingFetch)
		c.byClient = make(map[string]struct{})
		c.acks = make(chan *pendingFetch, min(c.srv.cfg.MaxInFlight, ackQueue))
	}
	c.pending[job.ID] = p
	c.byClient[f.ID] = struct{}{}
	c.mu.Unlock()
	if !c.srv.inflight.add(job.ID, c.id, received) {
		// A key whose job another connection of this process started:
		// nothing to store.
		c.forget(p)
		c.duplicate(f.ID, job.ID)
		return
	}

	fut, err := c.srv.publish(job)
	if err != nil {
		c.fail(p, err)
		return
	}
	p.fut = fut
	select {
	case c.acks <- p:
	case <-c.done:
		return
	}
	if c.ackRunning.CompareAndSwap(false, true) {
		c.srv.sessWG.Add(1) // the reader holds a count: no race with Wait
		go c.ackLoop()
	}
}

// ackLoop waits for PubAcks in submission order and tells the client
// "enqueued" once JetStream stored each job. It runs only while jobs wait
// for their PubAck: an idle session has no ack goroutine.
func (c *session) ackLoop() {
	defer c.srv.sessWG.Done()
	for {
		var p *pendingFetch
		select {
		case <-c.done:
			return
		case p = <-c.acks:
		default:
			// Nothing waits: stop, unless a job was queued meanwhile (its
			// sender saw this loop running and started none).
			c.ackRunning.Store(false)
			if len(c.acks) == 0 || !c.ackRunning.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		select {
		case ack := <-p.fut.Ok():
			c.stored(p, ack)
		case err := <-p.fut.Err():
			if temporaryPublishErr(err) {
				// The job may or may not be stored (a reconnect fails
				// every pending PubAck). Publish it again with the same
				// Nats-Msg-Id: a duplicate PubAck proves it is stored.
				c.srv.sessWG.Add(1)
				go c.republish(p, err)
				continue
			}
			c.fail(p, c.srv.publishErr(err))
		case <-c.done:
			return
		}
	}
}

// stored acts on the PubAck of p's job: enqueued, or for a keyed job that
// the stream already held (a duplicate key, from before a restart or from
// another origin process) enqueued with duplicate:true and the job's final
// frame when it comes. A republished unkeyed job's duplicate PubAck is its
// own first store.
func (c *session) stored(p *pendingFetch, ack *jetstream.PubAck) {
	if ack.Duplicate && p.keyed && !p.republished {
		// The stream holds (or held) a job under this key from before
		// this fetch. (A republished fetch's duplicate PubAck may be its
		// own first attempt's: then it is this fetch's job.)
		c.srv.inflight.disown(p.jobID)
		c.forget(p)
		c.duplicate(p.clientID, p.jobID)
		return
	}
	c.srv.inflight.stored(p.jobID, ack.Sequence, p.delayed)
	c.srv.enqueued.Add(1)
	c.srv.m.Enqueued()
	c.markEnqueued(p)
}

// duplicate answers a start-fetch whose key names an existing job: enqueued
// with duplicate:true, then that job's final frame under this frame's id.
func (c *session) duplicate(id, job string) {
	c.srv.m.DuplicateKey()
	c.queue(mustJSON(enqueuedFrame{Type: frameEnqueued, ID: id, Job: job, Duplicate: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.follow(ctx, id, job, true)
}

// forget drops p from this session's fetches without a frame.
func (c *session) forget(p *pendingFetch) {
	c.mu.Lock()
	if c.pending[p.jobID] == p {
		delete(c.pending, p.jobID)
		delete(c.byClient, p.clientID)
	}
	c.mu.Unlock()
}

// errUncertain marks a job whose storage could not be confirmed: it may run.
var errUncertain = errors.New("job storage unconfirmed")

// temporaryPublishErr reports errors after which the same publish may
// succeed: a reconnect, a stream leader election, a stall.
func temporaryPublishErr(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs) || errors.Is(err, context.DeadlineExceeded)
}

// republish retries storing p's job (same message, same Nats-Msg-Id, so it
// is stored at most once) until it is confirmed, refused for good, or three
// publish timeouts pass; then the fetch ends with an error that carries the
// job id, since the job may still run.
func (c *session) republish(p *pendingFetch, err error) {
	defer c.srv.sessWG.Done()
	msg := p.fut.Msg()
	p.republished = true
	deadline := time.Now().Add(3 * c.srv.cfg.PublishTimeout)
	for temporaryPublishErr(err) && time.Now().Before(deadline) {
		select {
		case <-time.After(250 * time.Millisecond):
		case <-c.done:
			return
		}
		var fut jetstream.PubAckFuture
		fut, err = c.srv.js.PublishMsgAsync(msg)
		if err != nil {
			continue
		}
		select {
		case ack := <-fut.Ok():
			c.stored(p, ack)
			return
		case err = <-fut.Err():
		case <-c.done:
			return
		}
	}
	if temporaryPublishErr(err) {
		err = fmt.Errorf("%w: %w", errUncertain, err)
	}
	c.fail(p, c.srv.publishErr(err))
}

// fail ends a fetch whose job could not be stored with one error frame.
func (c *session) fail(p *pendingFetch, err error) {
	code := broker.CodeInternal
	msg := "could not store the job"
	job := ""
	switch {
	case errors.Is(err, errUncertain):
		job = p.jobID
		msg = "the job could not be confirmed as stored and may still run: ask get-result with this job id later"
	case errors.Is(err, broker.ErrQueueFull):
		code, msg = broker.CodeQueueFull, "job queue is full; retry later"
	case errors.Is(err, ErrServerClosed):
		msg = "origin is shutting down"
	}
	lvl := zerolog.WarnLevel
	if code == broker.CodeQueueFull {
		lvl = zerolog.DebugLevel // expected backpressure, not an incident
	}
	c.logAt(lvl).Err(err).Str("id", p.clientID).Str("job", p.jobID).Str("code", string(code)).Msg("job not stored")
	if job == "" { // not stored: no result will come for connections attached meanwhile
		for _, a := range c.srv.inflight.remove(p.jobID) {
			a.sess.endFollow(p.jobID, a.id)
			a.sess.queue(encodeError(a.id, p.jobID, broker.Errorf(code, "%s", msg)))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[p.jobID]; !ok {
		return
	}
	delete(c.pending, p.jobID)
	delete(c.byClient, p.clientID)
	c.srv.m.Error(code)
	c.queueLocked(encodeError(p.clientID, job, broker.Errorf(code, "%s", msg)))
}

func (c *session) markEnqueued(p *pendingFetch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[p.jobID]; !ok {
		return
	}
	p.enqueued = time.Now()
	p.enqueuedSent = true
	c.queueLocked(mustJSON(enqueuedFrame{Type: frameEnqueued, ID: p.clientID, Job: p.jobID}))
	if p.early != nil {
		c.finishLocked(p, p.early)
	}
}

// deliver hands a job's result to this session.
func (c *session) deliver(res *broker.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[res.JobID]
	if !ok {
		return // not ours any more: already finished
	}
	if !p.enqueuedSent {
		p.early = res
		return
	}
	c.finishLocked(p, res)
}

func (c *session) finishLocked(p *pendingFetch, res *broker.Result) {
	delete(c.pending, p.jobID)
	delete(c.byClient, p.clientID)
	t := Timing{
		EnqueueMS: ms(p.enqueued.Sub(p.received)),
		QueueMS:   ms(res.QueueDuration()),
		FetchMS:   ms(time.Duration(res.FetchNanos)),
		TotalMS:   ms(time.Since(p.received)),
		DelayMS:   float64(res.DelayMS),
	}
	c.srv.observe(res, t)
	c.queueLocked(encodeResult(p.clientID, res, t))
}

func (c *session) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *session) queue(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueLocked(frame)
}

// queueLocked adds a frame to the send queue without blocking; a full queue
// means the client does not keep up, and it is disconnected.
func (c *session) queueLocked(frame []byte) {
	if c.closed {
		return
	}
	if c.out.push(frame) {
		c.wake()
	} else {
		frames, bytes := c.out.size()
		c.logAt(zerolog.WarnLevel).Int("frames", frames).Int("bytes", bytes).Int("in_flight", len(c.pending)).Msg("client too slow: send queue full, closing; its results stay available with get-result")
		c.srv.m.SlowClient()
		c.closeLocked(websocket.ClosePolicyViolation, "send queue full: client too slow")
	}
}

// writeTimedOut ends a session whose client did not take a write for
// write_timeout: as slow a client as one whose queue filled up, closed and
// counted the same way (the 1008 close frame is best effort: its socket is
// full). A session closing already (whose pending write was cut short on
// purpose) is left as it is.
func (c *session) writeTimedOut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	frames, bytes := c.out.size()
	c.logAt(zerolog.WarnLevel).Int("frames", frames).Int("bytes", bytes).Int("in_flight", len(c.pending)).Msg("client too slow: write timed out, closing; its results stay available with get-result")
	c.srv.m.SlowClient()
	c.closeLocked(websocket.ClosePolicyViolation, "write timed out: client too slow")
}

func (c *session) close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

func (c *session) closeLocked(code int, reason string) {
	if c.closed {
		return
	}
	c.closed = true
	c.closeCode, c.closeReason = code, reason
	close(c.done)
	c.wake() // the writer sends the close frame and closes the connection
	// Unblock the reader.
	_ = c.conn.SetReadDeadline(time.Now())
	if code == websocket.ClosePolicyViolation {
		// A client that does not read may hold the writer in a write until
		// WriteTimeout: cut it short. The close frame is then best effort.
		_ = c.conn.NetConn().SetWriteDeadline(time.Now())
	}
	c.logAt(zerolog.DebugLevel).Int("code", code).Str("reason", reason).Int("in_flight", len(c.pending)).Msg("session closed")
}
