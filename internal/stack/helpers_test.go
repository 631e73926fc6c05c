package stack

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
)

// frame is any origin → client frame, decoded loosely for assertions.
type frame struct {
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
	Timing       *struct {
		EnqueueMS float64 `json:"enqueue_ms"`
		QueueMS   float64 `json:"queue_ms"`
		FetchMS   float64 `json:"fetch_ms"`
		TotalMS   float64 `json:"total_ms"`
	} `json:"timing"`
}

// startStack starts an ephemeral pipeline adjusted by mod and stops it at
// test end.
func startStack(t *testing.T, mod func(*config.Config), opts ...Option) *Stack {
	t.Helper()
	cfg := EphemeralConfig()
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), opts...)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return st
}

// client is a test WebSocket client.
type client struct {
	t    *testing.T
	conn *websocket.Conn
}

func dial(t *testing.T, wsURL string) *client {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn}
	if f := c.read(); f.Type != "hello" || f.Origin == "" || f.Version == "" {
		t.Fatalf("first frame = %+v, want hello with origin and version", f)
	}
	return c
}

func (c *client) sendJSON(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) sendRaw(mt int, data []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(mt, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) read() frame {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("frame %q: %v", data, err)
	}
	return f
}

// fetch sends a start-fetch and returns the frames that end it: enqueued and
// result, or a single error.
func (c *client) fetch(id, url string, extra map[string]any) (enq frame, final frame) {
	c.t.Helper()
	msg := map[string]any{"type": "start-fetch", "id": id, "url": url}
	for k, v := range extra {
		msg[k] = v
	}
	c.sendJSON(msg)
	f := c.read()
	if f.Type == "error" {
		return frame{}, f
	}
	if f.Type != "enqueued" || f.ID != id || f.Job == "" {
		c.t.Fatalf("got %+v, want enqueued for %s", f, id)
	}
	return f, c.read()
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return strconv.Itoa(port)
}

// startServer creates and starts an embedded NATS server.
func startServer(cfg broker.ServerConfig) (*broker.Server, error) {
	srv, err := broker.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(context.Background()); err != nil {
		return nil, err
	}
	return srv, nil
}
