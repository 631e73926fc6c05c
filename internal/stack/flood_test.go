package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// countingWriter counts log lines (one write per zerolog event).
type countingWriter struct{ n atomic.Int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n.Add(1); return len(p), nil }

// TestWrongTokenFlood measures what a flood of wrong-token WebSocket
// upgrades does to a legitimate client: its fetch round trip (start-fetch
// to result, the test target's /echo) while nothing else runs, while
// PIPELINE_FLOOD_RATE (default 5,000) upgrades/s with a wrong Authorization
// header arrive (refused with 401 before the upgrade), and while the same
// rate arrives with a wrong ?access_token= (upgraded, refused with a frame).
// Each phase lasts PIPELINE_FLOOD_SECONDS (default 5) and every flood
// attempt is a new loopback TCP connection. Each phase also reports the
// process's CPU time per flood attempt (origin and flood client together),
// steadier than a p99 on a shared machine for comparing two builds. It is a measurement, not a
// check: it runs only with PIPELINE_FLOOD=1, e.g.
//
//	PIPELINE_FLOOD=1 go test -run TestWrongTokenFlood -v ./internal/stack/
//
// PIPELINE_FLOOD_ONLY=<part of a phase name> runs only the matching flood
// phases (after "no flood"), e.g. to profile one with -cpuprofile.
func TestWrongTokenFlood(t *testing.T) {
	measurement(t, "PIPELINE_FLOOD")
	rate := envInt("PIPELINE_FLOOD_RATE", 5000)
	secs := envInt("PIPELINE_FLOOD_SECONDS", 5)
	var lines countingWriter
	cfg := EphemeralConfig()
	cfg.Origin.AuthToken = "s3cret"
	cfg.Log.Level = "info"
	st := startConfiguredTo(t, cfg, zerolog.New(&lines).Level(zerolog.InfoLevel))

	conn, _, err := websocket.DefaultDialer.Dial(st.OriginWS(), http.Header{"Authorization": {"Bearer s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var hello testutil.Frame
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		t.Fatalf("hello: %+v %v", hello, err)
	}
	seq := 0
	fetch := func() time.Duration {
		seq++
		start := time.Now()
		id := "f" + strconv.Itoa(seq)
		if err := conn.WriteJSON(map[string]any{"type": "start-fetch", "id": id, "url": st.TargetURL() + "/echo"}); err != nil {
			t.Fatal(err)
		}
		for {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := conn.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var f testutil.Frame
			_ = json.Unmarshal(data, &f)
			if f.ID == id && (f.Type == "result" || f.Type == "error") {
				return time.Since(start)
			}
		}
	}
	only := os.Getenv("PIPELINE_FLOOD_ONLY") // run only phases whose name contains it (and "no flood")
	phase := func(name string, flood func(ctx context.Context) int64) {
		if only != "" && flood != nil && !strings.Contains(name, only) {
			return
		}
		h := hdrhistogram.New(1, 10_000_000, 3) // µs
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		defer cancel()
		before := lines.n.Load()
		cpu0 := processCPU()
		var sent atomic.Int64
		var wg sync.WaitGroup
		if flood != nil {
			wg.Add(1)
			go func() { defer wg.Done(); sent.Store(flood(ctx)) }()
		}
		began := time.Now()
		for ctx.Err() == nil {
			_ = h.RecordValue(fetch().Microseconds())
			time.Sleep(5 * time.Millisecond) // a steady client, not a burner
		}
		wg.Wait()
		el := time.Since(began).Seconds()
		cpu := processCPU() - cpu0
		perAttempt := 0.0
		if n := sent.Load(); n > 0 {
			perAttempt = float64(cpu.Microseconds()) / float64(n)
		}
		t.Logf("%-34s fetches %5d  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms | flood %6d attempts (%5.0f/s) | log lines %d | process CPU %5.2f s, %4.0f µs per attempt",
			name, h.TotalCount(), float64(h.ValueAtQuantile(50))/1000, float64(h.ValueAtQuantile(99))/1000, float64(h.Max())/1000,
			sent.Load(), float64(sent.Load())/el, lines.n.Load()-before, cpu.Seconds(), perAttempt)
	}
	phase("no flood", nil)
	phase("wrong header, new conns (401)", func(ctx context.Context) int64 {
		return floodUpgrades(ctx, st.OriginWS(), http.Header{"Authorization": {"Bearer wrong"}}, rate)
	})
	phase("wrong header, keep-alive (401)", func(ctx context.Context) int64 {
		return floodKeepAlive(ctx, st.OriginHTTP()+"/ws", rate)
	})
	phase("wrong header, raw keep-alive (401)", func(ctx context.Context) int64 {
		return floodRaw(ctx, st.Origin().Addr(), rate)
	})
	phase("wrong ?access_token= (frame)", func(ctx context.Context) int64 {
		return floodUpgrades(ctx, st.OriginWS()+"?access_token=wrong", nil, rate)
	})
}

// floodUpgrades opens rate WebSocket upgrades per second, each on a new
// connection, until ctx ends (bounded by 64 in flight), and returns how many
// it attempted.
func floodUpgrades(ctx context.Context, url string, h http.Header, rate int) int64 {
	d := &websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	sem := make(chan struct{}, 64)
	var n atomic.Int64
	var wg sync.WaitGroup
	const tick = 10 * time.Millisecond
	per := rate / int(time.Second/tick)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for ctx.Err() == nil {
		for i := 0; i < per; i++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			n.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, resp, err := d.DialContext(ctx, url, h)
				if err == nil {
					_, _, _ = c.ReadMessage() // the unauthorized frame
					c.Close()
				} else if resp != nil {
					resp.Body.Close()
				}
			}()
		}
		select {
		case <-tk.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return n.Load()
}

// floodKeepAlive sends rate wrong-token upgrade requests per second over
// at most 64 keep-alive connections (a 401 leaves the connection open for
// the next one) until ctx ends, and returns how many it sent.
func floodKeepAlive(ctx context.Context, url string, rate int) int64 {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	sem := make(chan struct{}, 64)
	var n atomic.Int64
	var wg sync.WaitGroup
	const tick = 10 * time.Millisecond
	per := rate / int(time.Second/tick)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for ctx.Err() == nil {
		for i := 0; i < per && ctx.Err() == nil; i++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				continue
			}
			n.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
				req.Header.Set("Authorization", "Bearer wrong")
				if resp, err := c.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		select {
		case <-tk.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return n.Load()
}

// floodRaw is floodKeepAlive with the cheapest client there is: 16 raw
// TCP connections writing a prepared upgrade request with a wrong token and
// reading the 401 (Content-Length framed), paced by a shared tick, so that
// the flood's own CPU cost disturbs the measurement as little as possible.
func floodRaw(ctx context.Context, addr string, rate int) int64 {
	req := []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer wrong\r\n\r\n")
	tokens := make(chan struct{}, rate)
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
				}
				if conn == nil {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue
					}
					conn, br = c, bufio.NewReader(c)
				}
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
				n.Add(1)
				if _, err := conn.Write(req); err != nil {
					conn.Close()
					conn = nil
					continue
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					conn.Close()
					conn = nil
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	const tick = 10 * time.Millisecond
	per := rate / int(time.Second/tick)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for ctx.Err() == nil {
		for i := 0; i < per; i++ {
			select {
			case tokens <- struct{}{}:
			default: // the clients lag: the attempt is dropped, not queued
			}
		}
		select {
		case <-tk.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return n.Load()
}

// processCPU is this process's user+system CPU time so far. In the flood
// test it holds the origin and the flood client both: the client's share
// is the same whatever the origin does, so differences between builds are
// the origin's.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measurement skips t unless environment variable gate is set: tests
// that measure rather than check run only when asked for.
func measurement(t *testing.T, gate string) {
	t.Helper()
	if os.Getenv(gate) == "" {
		t.Skipf("measurement: run with %s=1", gate)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
