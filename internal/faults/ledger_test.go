package faults

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ledger is the client side of a fault run: it records, per fetch id, the
// enqueued job and every final frame, so the run can prove "exactly one final
// frame per accepted fetch".
type ledger struct {
	mu       sync.Mutex
	sent     int
	enqueued map[string]string // id → job
	finals   map[string]int    // id → final frames seen
	codes    map[string]int    // final outcome → count
	attempts map[int]int       // result attempt → count
	notEnq   map[string]string // id → error code for fetches refused before enqueued
	changed  chan struct{}
}

func newLedger() *ledger {
	return &ledger{
		enqueued: map[string]string{}, finals: map[string]int{}, codes: map[string]int{},
		attempts: map[int]int{}, notEnq: map[string]string{}, changed: make(chan struct{}, 1),
	}
}

type wireFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Job     string `json:"job"`
	Code    string `json:"code"`
	Status  int    `json:"status"`
	Attempt int    `json:"attempt"`
}

// record takes one frame from the origin. get-result replies carry the id
// "get:<fetch id>".
func (l *ledger) record(f wireFrame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := f.ID
	if len(id) > 4 && id[:4] == "get:" {
		if f.Type == "error" && f.Code == "bad_request" {
			return // not finished yet
		}
		id = id[4:]
	}
	switch f.Type {
	case "enqueued":
		l.enqueued[id] = f.Job
	case "result", "error":
		if _, ok := l.enqueued[id]; !ok && f.Type == "error" && f.Job == "" {
			l.notEnq[id] = f.Code
			break
		}
		l.finals[id]++
		if f.Type == "result" {
			l.codes[fmt.Sprintf("status_%d", f.Status)]++
			l.attempts[f.Attempt]++
		} else {
			l.codes[f.Code]++
		}
	}
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// summary counts what the run must report.
type summary struct {
	Sent, Enqueued, Finished, Duplicates, Lost, Refused int
	Outcomes                                            map[string]int
	Redelivered                                         int
}

func (l *ledger) summary() summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := summary{Sent: l.sent, Enqueued: len(l.enqueued), Refused: len(l.notEnq), Outcomes: map[string]int{}}
	for id := range l.enqueued {
		switch n := l.finals[id]; {
		case n == 0:
			s.Lost++
		default:
			s.Finished++
			s.Duplicates += n - 1
		}
	}
	for k, v := range l.codes {
		s.Outcomes[k] = v
	}
	for a, n := range l.attempts {
		if a > 1 {
			s.Redelivered += n
		}
	}
	return s
}

// unfinished lists accepted fetches without a final frame.
func (l *ledger) unfinished() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for id, job := range l.enqueued {
		if l.finals[id] == 0 {
			out[id] = job
		}
	}
	return out
}

// wsConn is one client connection feeding the ledger.
type wsConn struct {
	conn *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
}

func dialLedger(t *testing.T, url string, l *ledger) *wsConn {
	t.Helper()
	var conn *websocket.Conn
	var err error
	for i := 0; i < 100; i++ {
		conn, _, err = websocket.DefaultDialer.Dial(url, nil)
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &wsConn{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var f wireFrame
			if json.Unmarshal(data, &f) == nil {
				l.record(f)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *wsConn) send(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteJSON(v)
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(l *ledger, d time.Duration, cond func() bool) bool {
	deadline := time.After(d)
	for !cond() {
		select {
		case <-l.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return cond()
		}
	}
	return true
}
