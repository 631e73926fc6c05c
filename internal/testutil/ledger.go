package testutil

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Ledger is the client side of a load test: it records, per fetch id, every
// frame the load's WebSocket clients receive, so the test can prove the
// exactly-once contract (docs/PROTOCOL.md §1: every fetch that got
// `enqueued` gets exactly one final frame). Its methods are safe for
// concurrent use.
//
// Replies to get-result frames sent with id GetResultID(fetch id) count as
// frames of that fetch; a pending, not_found or bad_request reply (not
// finished yet, or not known yet to a restarted origin) is dropped,
// and so is a reply for a fetch that already has its final frame (a test
// that asks again before the first answer came gets two answers to two
// questions, not a duplicate delivery).
type Ledger struct {
	mu      sync.Mutex
	sent    map[string]string  // fetch id → body its result must carry ("": any)
	frames  map[string][]Frame // fetch id → frames received, in order
	stray   []Frame            // frames for ids never sent
	changed chan struct{}      // signalled (without blocking) on every frame
	// Counted as frames arrive, so Summary and Pending stay cheap enough
	// to call for every frame a load sends.
	job   map[string]string // fetch id → job id from its enqueued frame
	nfin  map[string]int    // fetch id → final frames
	count Summary           // all but Sent and Lost
	done  int               // sent fetches with a final frame
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{
		sent: map[string]string{}, frames: map[string][]Frame{}, changed: make(chan struct{}, 1),
		job: map[string]string{}, nfin: map[string]int{}, count: Summary{Outcomes: map[string]int{}},
	}
}

// getPrefix marks get-result ids (GetResultID).
const getPrefix = "get:"

// GetResultID is the id to send a get-result for fetch id with, so the
// ledger files the reply under that fetch.
func GetResultID(id string) string { return getPrefix + id }

// MarkSent records that a start-fetch with this id is being sent. wantBody,
// if not empty, is the body its result must carry (Check verifies it).
func (l *Ledger) MarkSent(id, wantBody string) {
	l.mu.Lock()
	l.sent[id] = wantBody
	l.mu.Unlock()
}

// Record files one frame received from the origin.
func (l *Ledger) Record(f Frame) {
	if f.Type == "hello" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := strings.CutPrefix(f.ID, getPrefix); ok {
		if f.Type == "pending" || f.Type == "error" && (f.Code == "not_found" || f.Code == "bad_request") {
			return // not finished (yet), or not known to a restarted origin yet
		}
		if l.nfin[id] > 0 {
			return // answered already
		}
		f.ID = id
	}
	if _, ok := l.sent[f.ID]; !ok {
		l.stray = append(l.stray, f)
	} else {
		l.frames[f.ID] = append(l.frames[f.ID], f)
		l.countLocked(f)
	}
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Pending is the number of sent fetches without a final frame.
func (l *Ledger) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sent) - l.done
}

// Unfinished maps each enqueued fetch without a final frame to its job id.
func (l *Ledger) Unfinished() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for id, fs := range l.frames {
		if job := enqueuedJob(fs); job != "" && finals(fs) == 0 {
			out[id] = job
		}
	}
	return out
}

// Jobs maps each enqueued fetch whose id has prefix to its job id.
func (l *Ledger) Jobs(prefix string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for id, job := range l.job {
		if strings.HasPrefix(id, prefix) {
			out[id] = job
		}
	}
	return out
}

// ByExecutor counts results per executor id among fetches whose id has
// prefix.
func (l *Ledger) ByExecutor(prefix string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for id, fs := range l.frames {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		for _, f := range fs {
			if f.Type == "result" {
				out[f.Executor]++
			}
		}
	}
	return out
}

// Summary counts how the fetches ended.
type Summary struct {
	Sent     int // start-fetch frames sent (MarkSent)
	Enqueued int // fetches that got `enqueued`
	Finished int // enqueued fetches with at least one final frame
	Lost     int // enqueued fetches without a final frame
	// Duplicates counts final frames beyond the first of enqueued fetches.
	Duplicates int
	// Results and ErrorsAfterEnqueued split Finished by the first final frame.
	Results, ErrorsAfterEnqueued int
	// Refused counts fetches never enqueued that got an error without a job
	// id (the job was certainly not stored).
	Refused int
	// Redelivered counts results from a delivery attempt after the first.
	Redelivered int
	// Outcomes counts every final frame: results as "status_<code>", errors
	// by code.
	Outcomes map[string]int
}

// Summary returns the counts so far.
func (l *Ledger) Summary() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.summaryLocked()
}

func (l *Ledger) summaryLocked() Summary {
	s := l.count
	s.Sent = len(l.sent)
	s.Lost = s.Enqueued - s.Finished
	s.Outcomes = make(map[string]int, len(l.count.Outcomes))
	for k, v := range l.count.Outcomes {
		s.Outcomes[k] = v
	}
	return s
}

// countLocked updates the counts for frame f of a sent fetch, in arrival
// order.
func (l *Ledger) countLocked(f Frame) {
	c := &l.count
	switch f.Type {
	case "enqueued":
		if _, dup := l.job[f.ID]; !dup {
			l.job[f.ID] = f.Job
			c.Enqueued++
		}
		return
	case "result":
		c.Outcomes["status_"+strconv.Itoa(f.Status)]++
		if f.Attempt > 1 {
			c.Redelivered++
		}
	case "error":
		c.Outcomes[f.Code]++
	default:
		return
	}
	n := l.nfin[f.ID]
	l.nfin[f.ID] = n + 1
	if n == 0 {
		l.done++
	}
	_, enqueued := l.job[f.ID]
	switch {
	case !enqueued:
		if n == 0 && f.Type == "error" && f.Job == "" {
			c.Refused++
		}
	case n > 0:
		c.Duplicates++
	case f.Type == "result":
		c.Finished++
		c.Results++
	default:
		c.Finished++
		c.ErrorsAfterEnqueued++
	}
}

// Check asserts the exactly-once contract strictly and returns the summary:
// every fetch that got `enqueued` gets exactly one final frame after it, a
// result (with the expected body, if MarkSent named one) or an error; a
// fetch that did not get `enqueued` gets exactly one error and nothing else;
// no frame arrives for an id never sent.
func (l *Ledger) Check(t testing.TB) Summary {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.stray {
		t.Errorf("frame for a fetch never sent: %+v", f)
	}
	ids := make([]string, 0, len(l.sent))
	for id := range l.sent {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bad := 0
	for _, id := range ids {
		fs := l.frames[id]
		kinds := make([]string, len(fs))
		for i, f := range fs {
			kinds[i] = f.Type
		}
		seq := strings.Join(kinds, ",")
		fail := func(format string, args ...any) {
			if bad++; bad <= 20 {
				t.Errorf("fetch %s (frames %s): %s", id, seq, fmt.Sprintf(format, args...))
			}
		}
		switch seq {
		case "enqueued,result":
			res := fs[1]
			if res.Job != fs[0].Job {
				fail("result for job %s, enqueued as %s", res.Job, fs[0].Job)
			}
			if want := l.sent[id]; want != "" && (res.Status != 200 || res.Body != want) {
				fail("result status %d body %q, want 200 %q", res.Status, res.Body, want)
			}
		case "enqueued,error", "error":
		default:
			fail("want enqueued then exactly one result or error, or a single error")
		}
	}
	return l.summaryLocked()
}

// WaitFor waits until cond holds or d passes, re-checking whenever a frame
// arrives (and every 20 ms), and reports whether it held. cond must not
// call back into a method that waits.
func (l *Ledger) WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-l.changed:
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// WaitDone waits until every sent fetch has a final frame or d passed.
func (l *Ledger) WaitDone(d time.Duration) bool {
	return l.WaitFor(d, func() bool { return l.Pending() == 0 })
}

func finals(fs []Frame) int {
	n := 0
	for _, f := range fs {
		if f.Final() {
			n++
		}
	}
	return n
}

func enqueuedJob(fs []Frame) string {
	for _, f := range fs {
		if f.Type == "enqueued" {
			return f.Job
		}
	}
	return ""
}

// LedgerConn is one WebSocket client of a load: a reader goroutine records
// every frame in its ledger. Its send methods are safe for concurrent use.
type LedgerConn struct {
	l    *Ledger
	conn *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
}

// DialLedger connects to an origin (retrying for up to 10 s while it comes
// up), checks its hello frame, and records every later frame in l. The
// connection is closed at test end.
func DialLedger(t testing.TB, wsURL string, l *Ledger) *LedgerConn {
	t.Helper()
	var conn *websocket.Conn
	var err error
	WaitFor(10*time.Second, func() bool {
		conn, _, err = websocket.DefaultDialer.Dial(wsURL, nil)
		return err == nil
	})
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	var hello Frame
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		conn.Close()
		t.Fatalf("hello: %+v %v", hello, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	c := &LedgerConn{l: l, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var f Frame
			if json.Unmarshal(data, &f) == nil {
				l.Record(f)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

// StartFetch records fetch id as sent (see Ledger.MarkSent) and sends its
// start-fetch frame for url.
func (c *LedgerConn) StartFetch(id, url, wantBody string) error {
	c.l.MarkSent(id, wantBody)
	return c.Send(map[string]any{"type": "start-fetch", "id": id, "url": url})
}

// Send writes v as one text frame.
func (c *LedgerConn) Send(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteJSON(v)
}

// Done is closed once the connection is gone (closed by either side).
func (c *LedgerConn) Done() <-chan struct{} { return c.done }
