package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/cpustat"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
)

// countingWriter counts log lines (one write per zerolog event).
type countingWriter struct{ n atomic.Int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n.Add(1); return len(p), nil }

// TestWrongTokenFlood measures what a flood of wrong-token requests does to
// a legitimate client: its fetch round trip (start-fetch to result, the test
// target's /echo) while nothing else runs (before and after the floods),
// and while PIPELINE_FLOOD_RATE (default 5,000) attempts/s arrive in four
// ways: wrong Authorization header on a new connection each (401 before the
// upgrade), the same over net/http keep-alive connections and over raw
// keep-alive connections, and a wrong ?access_token= (upgraded, refused
// with a frame). Each phase lasts PIPELINE_FLOOD_SECONDS (default 5).
//
// The flood comes from 127.0.0.2 and the legitimate client from 127.0.0.1,
// two source addresses, so that the origin's per-source refusal limit
// (origin.refusals_per_source, at its defaults; loopback is not exempted
// here) can tell them apart. PIPELINE_FLOOD_LIMIT=off turns the limit off,
// to compare. The flood client is a separate process (this test binary,
// run again as TestWrongTokenFloodClient), so that each phase reports the
// CPU per attempt of the origin's process (which also holds NATS, the
// executor, the target and the legitimate client: the no-flood phase is
// their share) apart from the flood client's. PIPELINE_FLOOD_INPROCESS=1
// floods from this process instead, as earlier measurements did, and
// PIPELINE_FLOOD_NICE=<n> runs the flood process at that nice value, so that
// on a small box it takes the CPU the origin leaves, as a flood from another
// machine would (the kernel's share of each connection is still here).
//
// It is a measurement, not a check: it runs only with PIPELINE_FLOOD=1,
// e.g.
//
//	PIPELINE_FLOOD=1 go test -count=1 -run TestWrongTokenFlood -v ./internal/stack/
//
// PIPELINE_FLOOD_KEEPER=off runs it without the jobs stream's keeper
// (executor.jobs_keeper_interval -1).
//
// PIPELINE_FLOOD_ONLY=<part of a phase name> runs only the matching flood
// phases (after "no flood"), e.g. to profile one with -cpuprofile.
func TestWrongTokenFlood(t *testing.T) {
	measurement(t, "PIPELINE_FLOOD")
	rate := envInt("PIPELINE_FLOOD_RATE", 5000)
	secs := envInt("PIPELINE_FLOOD_SECONDS", 5)
	limit := os.Getenv("PIPELINE_FLOOD_LIMIT") != "off"
	inProcess := os.Getenv("PIPELINE_FLOOD_INPROCESS") != ""
	var lines countingWriter
	cfg := EphemeralConfig()
	cfg.Origin.AuthToken = "s3cret"
	cfg.Origin.RefusalExempt = nil // the flood's 127.0.0.2 is loopback too
	if !limit {
		cfg.Origin.RefusalsPerSource = 0
	}
	if os.Getenv("PIPELINE_FLOOD_KEEPER") == "off" { // for an A/B of the jobs stream's keeper
		cfg.Executor.JobsKeeperInterval = -1
	}
	cfg.Log.Level = "info"
	st := startConfiguredTo(t, cfg, zerolog.New(&lines).Level(zerolog.InfoLevel))
	t.Logf("refusal limit %v (refusals_per_source %d, refusal_window %v, refusal_block %v); flood from 127.0.0.2, %s (nice %q); legitimate client from 127.0.0.1",
		limit, cfg.Origin.RefusalsPerSource, cfg.Origin.RefusalWindow, cfg.Origin.RefusalBlock,
		map[bool]string{true: "in this process", false: "in a separate process"}[inProcess], os.Getenv("PIPELINE_FLOOD_NICE"))

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
	closedAtAccept := func() float64 {
		n, _ := testutil.MetricValue(t, st.metrics.Gatherer(), origin.MetricClosedAtAcceptTotal, nil)
		return n
	}
	target := floodTarget{ws: st.OriginWS(), http: st.OriginHTTP(), addr: st.Origin().Addr()}
	only := os.Getenv("PIPELINE_FLOOD_ONLY") // run only phases whose name contains it (and "no flood")
	var idleCPUPerSec float64                // the process's CPU per second with no flood
	phase := func(name, kind string) {
		if only != "" && kind != "" && !strings.Contains(name, only) {
			return
		}
		h := hdrhistogram.New(1, 10_000_000, 3) // µs
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		defer cancel()
		before, closed0 := lines.n.Load(), closedAtAccept()
		cpu0 := processCPU()
		var res floodResult
		var wg sync.WaitGroup
		if kind != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if inProcess {
					res = runFlood(ctx, kind, target, rate)
					return
				}
				res = floodProcess(t, kind, target, rate, secs)
			}()
		}
		began := time.Now()
		for ctx.Err() == nil {
			_ = h.RecordValue(fetch().Microseconds())
			time.Sleep(5 * time.Millisecond) // a steady client, not a burner
		}
		wg.Wait()
		el := time.Since(began).Seconds()
		cpu := processCPU() - cpu0
		if kind == "" && idleCPUPerSec == 0 {
			idleCPUPerSec = cpu.Seconds() / el
		}
		perAttempt, above, client := 0.0, 0.0, 0.0
		if n := float64(res.attempts); n > 0 {
			perAttempt = float64(cpu.Microseconds()) / n
			above = (cpu.Seconds() - idleCPUPerSec*el) * 1e6 / n
			client = float64(res.clientCPU.Microseconds()) / n
		}
		t.Logf("%-34s fetches %5d  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms | flood %6d attempts (%5.0f/s), %6d answered, %6.0f closed at accept | log lines %d | origin process CPU %5.2f s, %4.0f µs per attempt (%4.0f above no flood) | flood client %4.0f µs per attempt",
			name, h.TotalCount(), float64(h.ValueAtQuantile(50))/1000, float64(h.ValueAtQuantile(99))/1000, float64(h.Max())/1000,
			res.attempts, float64(res.attempts)/el, res.answered, closedAtAccept()-closed0, lines.n.Load()-before,
			cpu.Seconds(), perAttempt, above, client)
	}
	phase("no flood", "")
	phase("wrong header, new conns (401)", floodConns)
	phase("wrong header, keep-alive (401)", floodKeepAliveKind)
	phase("wrong header, raw keep-alive (401)", floodRawKind)
	phase("wrong ?access_token= (frame)", floodAccessToken)
	phase("no flood, after", "") // the box's load moves during a run: a second baseline
}

// The kinds of flood, named in PIPELINE_FLOOD_CLIENT for a flood process.
const (
	floodConns         = "conns"
	floodKeepAliveKind = "keepalive"
	floodRawKind       = "raw"
	floodAccessToken   = "access_token"
)

// floodTarget is where a flood goes: the origin's WebSocket URL, its HTTP
// base URL and its host:port.
type floodTarget struct{ ws, http, addr string }

// floodResult is what a flood did: attempts made, attempts answered (a 401
// or an unauthorized frame; the rest were closed or failed), and, for a
// flood process, that process's CPU time.
type floodResult struct {
	attempts, answered int64
	clientCPU          time.Duration
}

// floodSource is the flood's source address, another one than the
// legitimate client's 127.0.0.1 (all of 127/8 is loopback on Linux).
var floodSource = &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}

// floodDialer dials from floodSource. Once the origin blocks the source,
// the kernel drops its SYNs (the origin's source filter): a connect then
// gets no answer, and the half-second timeout (before the SYN's first
// retransmission, at 1 s) keeps each attempt at one SYN, so that the flood
// goes on offering its rate with at most floodInFlight attempts waiting.
var floodDialer = &net.Dialer{LocalAddr: floodSource, Timeout: 500 * time.Millisecond}

// floodInFlight bounds a flood's attempts in flight: 5,000/s for half a
// second each, with room.
const floodInFlight = 4096

// runFlood runs one kind of flood against to from this process until ctx
// ends.
func runFlood(ctx context.Context, kind string, to floodTarget, rate int) floodResult {
	var n, ok int64
	switch kind {
	case floodConns:
		n, ok = floodUpgrades(ctx, to.ws, http.Header{"Authorization": {"Bearer wrong"}}, rate)
	case floodKeepAliveKind:
		n, ok = floodKeepAlive(ctx, to.http+"/ws", rate)
	case floodRawKind:
		n, ok = floodRaw(ctx, to.addr, rate)
	case floodAccessToken:
		n, ok = floodUpgrades(ctx, to.ws+"?access_token=wrong", nil, rate)
	}
	return floodResult{attempts: n, answered: ok}
}

// floodProcess runs one kind of flood for secs in a separate process, this
// test binary running TestWrongTokenFloodClient, and returns what it did
// and its CPU time. It fails t if the process fails.
func floodProcess(t *testing.T, kind string, to floodTarget, rate, secs int) floodResult {
	args := []string{os.Args[0], "-test.run=^TestWrongTokenFloodClient$", "-test.count=1"}
	if n := os.Getenv("PIPELINE_FLOOD_NICE"); n != "" {
		args = append([]string{"nice", "-n", n}, args...) // every thread of it, from its first
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "PIPELINE_FLOOD_CLIENT="+kind, "PIPELINE_FLOOD_CLIENT_WS="+to.ws,
		"PIPELINE_FLOOD_CLIENT_HTTP="+to.http, "PIPELINE_FLOOD_CLIENT_ADDR="+to.addr,
		"PIPELINE_FLOOD_RATE="+strconv.Itoa(rate), "PIPELINE_FLOOD_SECONDS="+strconv.Itoa(secs))
	cmd.SysProcAttr = childAttr()
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("flood process %s: %v\n%s", kind, err, out)
		return floodResult{}
	}
	var res floodResult
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "flood-result" {
			res.attempts, _ = strconv.ParseInt(f[1], 10, 64)
			res.answered, _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	res.clientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res
}

// TestWrongTokenFloodClient is the flood process of TestWrongTokenFlood:
// with PIPELINE_FLOOD_CLIENT set it floods the origin named in the
// environment for PIPELINE_FLOOD_SECONDS and prints "flood-result
// <attempts> <answered>".
func TestWrongTokenFloodClient(t *testing.T) {
	kind := os.Getenv("PIPELINE_FLOOD_CLIENT")
	if kind == "" {
		t.Skip("the flood process of TestWrongTokenFlood")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(envInt("PIPELINE_FLOOD_SECONDS", 5))*time.Second)
	defer cancel()
	res := runFlood(ctx, kind, floodTarget{ws: os.Getenv("PIPELINE_FLOOD_CLIENT_WS"), http: os.Getenv("PIPELINE_FLOOD_CLIENT_HTTP"),
		addr: os.Getenv("PIPELINE_FLOOD_CLIENT_ADDR")}, envInt("PIPELINE_FLOOD_RATE", 5000))
	fmt.Printf("flood-result %d %d\n", res.attempts, res.answered)
}

// floodUpgrades opens rate WebSocket upgrades per second from floodSource,
// each on a new connection, until ctx ends (bounded by floodInFlight), and
// returns how many it attempted and how many were answered (a 401, or an
// upgrade and its unauthorized frame).
func floodUpgrades(ctx context.Context, url string, h http.Header, rate int) (attempts, answered int64) {
	d := &websocket.Dialer{HandshakeTimeout: 2 * time.Second, NetDialContext: floodDialer.DialContext}
	sem := make(chan struct{}, floodInFlight)
	var n, ok atomic.Int64
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
					if _, _, err := c.ReadMessage(); err == nil {
						ok.Add(1) // the unauthorized frame
					}
					c.Close()
				} else if resp != nil {
					ok.Add(1)
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
	return n.Load(), ok.Load()
}

// floodKeepAlive sends rate wrong-token upgrade requests per second from
// floodSource over keep-alive connections (64 kept idle; a 401 leaves the
// connection open for the next one, unless the source is blocked; at most
// floodInFlight requests and connections) until ctx ends, and returns how
// many it sent and how many got a 401.
func floodKeepAlive(ctx context.Context, url string, rate int) (attempts, answered int64) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: floodInFlight, DialContext: floodDialer.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	sem := make(chan struct{}, floodInFlight)
	var n, ok atomic.Int64
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
					ok.Add(1)
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
	return n.Load(), ok.Load()
}

// floodRaw is floodKeepAlive with the cheapest client there is: 16 raw
// TCP connections from floodSource writing a prepared upgrade request with
// a wrong token and reading the 401 (Content-Length framed), paced by a
// shared tick, so that the flood's own CPU cost disturbs the measurement as
// little as possible. A connection closed by the origin is dialed again on
// the next attempt (once the source is blocked that is all it does: 16
// dials in flight, each waiting out its timeout).
func floodRaw(ctx context.Context, addr string, rate int) (attempts, answered int64) {
	req := []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer wrong\r\n\r\n")
	tokens := make(chan struct{}, rate)
	var n, ok atomic.Int64
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
				n.Add(1) // a dial refused (reset at accept) is an attempt too
				if conn == nil {
					c, err := floodDialer.DialContext(ctx, "tcp", addr)
					if err != nil {
						continue
					}
					conn, br = c, bufio.NewReader(c)
				}
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
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
				ok.Add(1)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close { // the origin closes it after this 401
					conn.Close()
					conn = nil
				}
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
	return n.Load(), ok.Load()
}

// processCPU is this process's user+system CPU time so far (not its
// children's). In the flood test it holds the origin, NATS, the executor,
// the target and the legitimate client, and the flood client too when it
// floods in-process.
func processCPU() time.Duration {
	cpu, _ := cpustat.Process()
	return cpu
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
