package testutil

import (
	"encoding/json"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Frame is any origin → client frame (docs/PROTOCOL.md §1), decoded loosely
// for assertions.
type Frame struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	Job          string            `json:"job"`
	Origin       string            `json:"origin"`
	Version      string            `json:"version"`
	Code         string            `json:"code"`
	Message      string            `json:"message"`
	Status       int               `json:"status"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	BodyEncoding string            `json:"body_encoding"`
	Truncated    bool              `json:"truncated"`
	Attempt      int               `json:"attempt"`
	Executor     string            `json:"executor"`
	State        string            `json:"state"`     // pending frames
	Duplicate    bool              `json:"duplicate"` // enqueued for a known key
	Timing       *struct {
		EnqueueMS float64 `json:"enqueue_ms"`
		QueueMS   float64 `json:"queue_ms"`
		FetchMS   float64 `json:"fetch_ms"`
		TotalMS   float64 `json:"total_ms"`
		DelayMS   float64 `json:"delay_ms"`
	} `json:"timing"`
}

// Final reports whether f ends a fetch (a result or an error).
func (f Frame) Final() bool { return f.Type == "result" || f.Type == "error" }

// WSClient is a WebSocket client of an origin, driven from the test
// goroutine: its methods fail the test with t.Fatalf.
type WSClient struct {
	t    testing.TB
	Conn *websocket.Conn
}

// DialWS connects to an origin's WebSocket URL, checks the hello frame and
// closes the connection at test end.
func DialWS(t testing.TB, wsURL string) *WSClient {
	t.Helper()
	return dialWS(t, websocket.DefaultDialer, wsURL)
}

// DialWSSmallBuffer is DialWS with a socket receive buffer of a few KiB, for
// a client that stops reading: the origin's writes then stall after a few
// KiB instead of after the megabytes loopback buffers absorb, so a test
// reaches the stalled state with little data, on a loaded machine too.
func DialWSSmallBuffer(t testing.TB, wsURL string) *WSClient {
	t.Helper()
	d := *websocket.DefaultDialer
	d.NetDialContext = (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}).DialContext
	return dialWS(t, &d, wsURL)
}

func dialWS(t testing.TB, d *websocket.Dialer, wsURL string) *WSClient {
	t.Helper()
	conn, _, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &WSClient{t: t, Conn: conn}
	if f := c.Read(); f.Type != "hello" || f.Origin == "" || f.Version == "" {
		t.Fatalf("first frame = %+v, want hello with origin and version", f)
	}
	return c
}

// SetT makes the client report failures to t, e.g. to a subtest that uses
// a connection its parent opened.
func (c *WSClient) SetT(t testing.TB) { c.t = t }

// SendJSON writes v as one text frame.
func (c *WSClient) SendJSON(v any) {
	c.t.Helper()
	if err := c.Conn.WriteJSON(v); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// SendRaw writes one frame of message type mt.
func (c *WSClient) SendRaw(mt int, data []byte) {
	c.t.Helper()
	if err := c.Conn.WriteMessage(mt, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Read returns the next frame, waiting at most 15 s.
func (c *WSClient) Read() Frame {
	c.t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, data, err := c.Conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("frame %q: %v", data, err)
	}
	return f
}

// Fetch sends a start-fetch (with extra fields merged in) and returns the
// frames that end it: enqueued and the final frame, or a single error as
// final with a zero enq.
func (c *WSClient) Fetch(id, url string, extra map[string]any) (enq, final Frame) {
	c.t.Helper()
	msg := map[string]any{"type": "start-fetch", "id": id, "url": url}
	for k, v := range extra {
		msg[k] = v
	}
	c.SendJSON(msg)
	f := c.Read()
	if f.Type == "error" {
		return Frame{}, f
	}
	if f.Type != "enqueued" || f.ID != id || f.Job == "" {
		c.t.Fatalf("got %+v, want enqueued for %s", f, id)
	}
	return f, c.Read()
}
