package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// echoOrigin answers every start-fetch at once with enqueued and result
// frames, doing as little work as possible, so that a benchmark against it
// measures the load generator rather than the server.
func echoOrigin(tb testing.TB) string {
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","origin":"echo","version":"bench"}`))
		var f wire.Frame
		var out []byte
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if wire.Parse(msg, &f) != nil {
				continue
			}
			out = append(append(append(out[:0], `{"type":"enqueued","id":"`...), f.ID...), `","job":"j"}`...)
			if ws.WriteMessage(websocket.TextMessage, out) != nil {
				return
			}
			out = append(append(append(out[:0], `{"type":"result","id":"`...), f.ID...),
				`","job":"j","status":200,"headers":{},"body":"ok","body_encoding":"utf8","timing":{"enqueue_ms":0.1,"queue_ms":0.1,"fetch_ms":0.1,"total_ms":0.3}}`...)
			if ws.WriteMessage(websocket.TextMessage, out) != nil {
				return
			}
		}
	}))
	tb.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		wg.Wait()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// BenchmarkRunClosedLoop measures the load generator's own cost per fetch
// against an origin that answers instantly; fetches/s is its ceiling on this
// machine (shared with the echo origin).
func BenchmarkRunClosedLoop(b *testing.B) {
	origin := echoOrigin(b)
	b.ReportAllocs()
	b.ResetTimer()
	rep, err := Run(context.Background(), Config{
		Origins:     []string{origin},
		TargetURL:   "http://127.0.0.1:1/instant",
		Concurrency: 100,
		Requests:    max(b.N, 1),
	})
	if err != nil {
		b.Fatal(err)
	}
	if rep.OK != int64(max(b.N, 1)) {
		b.Fatalf("ok %d of %d: %v", rep.OK, b.N, rep.ErrorsByCode)
	}
	b.ReportMetric(rep.ThroughputRPS, "fetches/s")
}
