package origin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// floodDialer dials from 127.0.0.2 (all of 127/8 is loopback on Linux), so
// that a flooding client and a legitimate one on 127.0.0.1 are two source
// addresses. It skips the test where that address cannot be bound.
func floodDialer(t *testing.T) *net.Dialer {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2 here: %v", err)
	}
	ln.Close()
	return d
}

// TestRefusalsCloseABlockedSourceAtAccept sends wrong tokens from 127.0.0.2
// (401s, and a wrong ?access_token=) past origin.refusals_per_source: the
// last 401 closes its keep-alive connection, and its next connections are
// closed at accept without an answer, while 127.0.0.1 is still served
// (WebSocket with the token, /healthz, and a 401 for its own wrong token).
func TestRefusalsCloseABlockedSourceAtAccept(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, false)
	m := metrics.New()
	s := b.origin(Config{AuthToken: "s3cret", Metrics: m, RefusalLimits: RefusalLimits{RefusalsPerSource: 5}})
	fd := floodDialer(t)
	flood := &http.Client{Transport: &http.Transport{DialContext: fd.DialContext}, Timeout: 5 * time.Second}
	defer flood.CloseIdleConnections()
	wrong := func(c *http.Client) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/ws", nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("wrong token: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token: status %d, want 401", resp.StatusCode)
		}
		return resp
	}

	for i := range 4 {
		if resp := wrong(flood); resp.Close {
			t.Fatalf("refusal %d of 5: the connection was closed, want keep-alive", i+1)
		}
	}
	// The 5th: a wrong ?access_token=, refused with a frame, counts too.
	wsd := websocket.Dialer{NetDialContext: fd.DialContext, HandshakeTimeout: 5 * time.Second}
	c, _, err := wsd.Dial("ws://"+s.Addr()+"/ws?access_token=wrong", nil)
	if err != nil {
		t.Fatalf("wrong access_token: %v", err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatalf("wrong access_token: no unauthorized frame: %v", err)
	}
	c.Close()
	if resp := wrong(flood); !resp.Close {
		t.Fatal("the refusal past the limit kept the connection alive, want Connection: close")
	}

	// Its next connection gets no answer at all: on Linux the kernel drops
	// its SYN (sourcefilter_linux.go), elsewhere it is closed at accept.
	if runtime.GOOS == "linux" {
		if !dropped(t, "127.0.0.2", s.Addr()) {
			t.Fatal("a blocked source connected, want its SYN dropped")
		}
		testutil.WantMetric(t, m.Gatherer(), MetricSourcesFiltered, nil, 1)
		testutil.WantMetric(t, m.Gatherer(), MetricClosedAtAcceptTotal, nil, 0)
	}
	var conn net.Conn
	err = errors.New("not dialed: the kernel drops its SYNs")
	if runtime.GOOS != "linux" {
		conn, err = fd.Dial("tcp", s.Addr())
	}
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		line, rerr := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		var ne net.Error
		if rerr == nil || (errors.As(rerr, &ne) && ne.Timeout()) {
			t.Fatalf("a blocked source's connection: read %q, %v; want it closed at accept", line, rerr)
		}
	}
	if runtime.GOOS != "linux" {
		if _, err := flood.Get("http://" + s.Addr() + "/healthz"); err == nil {
			t.Fatal("a blocked source got /healthz")
		}
	}

	// 127.0.0.1 is another source: served as before.
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(s), http.Header{"Authorization": {"Bearer s3cret"}})
	if err != nil {
		t.Fatalf("legitimate client: %v", err)
	}
	defer ws.Close()
	var hello testutil.Frame
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		t.Fatalf("legitimate client: got %+v %v, want hello", hello, err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz from 127.0.0.1: %v %v", resp, err)
	}
	resp.Body.Close()
	local := &http.Client{Transport: &http.Transport{}}
	defer local.CloseIdleConnections()
	if resp := wrong(local); resp.Close {
		t.Fatal("127.0.0.1's first wrong token closed its connection")
	}

	g := m.Gatherer()
	testutil.WantMetric(t, g, MetricSourcesBlockedTotal, nil, 1)
	if n, _ := testutil.MetricValue(t, g, MetricClosedAtAcceptTotal, nil); n < 1 && runtime.GOOS != "linux" {
		t.Errorf("%s = %v, want at least 1", MetricClosedAtAcceptTotal, n)
	}
}

// TestKernelFilterFollowsBlocks checks on Linux that a blocked source's
// packets are dropped in the kernel only while its block lasts: once
// origin.refusal_block has run out (the filter is rebuilt by a timer: the
// source sends nothing the origin could see), it connects and is answered
// again, and the filter is empty.
func TestKernelFilterFollowsBlocks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kernel filter is Linux only")
	}
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, false)
	m := metrics.New()
	s := b.origin(Config{AuthToken: "s3cret", Metrics: m, RefusalLimits: RefusalLimits{RefusalsPerSource: 1, RefusalBlock: 3 * time.Second}})
	fd := floodDialer(t)
	flood := &http.Client{Transport: &http.Transport{DialContext: fd.DialContext}, Timeout: 5 * time.Second}
	defer flood.CloseIdleConnections()
	for range 2 {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/ws", nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := flood.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// Blocked for 3 s from the second refusal: this dial (300 ms) falls in it.
	if !dropped(t, "127.0.0.2", s.Addr()) {
		t.Fatal("a blocked source connected, want its SYN dropped")
	}
	testutil.Eventually(t, 15*time.Second, func() bool { return connects(t, "127.0.0.2", s.Addr(), 300*time.Millisecond) },
		"127.0.0.2 connects again after its block")
	testutil.WantMetric(t, m.Gatherer(), MetricSourcesFiltered, nil, 0)
	resp, err := flood.Get("http://" + s.Addr() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz from 127.0.0.2 after its block: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestRefusalsOffWithoutLimit: a zero RefusalsPerSource (Config's zero
// value) turns the limit off: a source gets as many kept-alive 401s as it
// asks for.
func TestRefusalsOffWithoutLimit(t *testing.T) {
	b := newBench(t, broker.StreamsConfig{Storage: broker.MemoryStorage}, false)
	s := b.origin(Config{AuthToken: "s3cret"}) // the zero value: no limit
	fd := floodDialer(t)
	flood := &http.Client{Transport: &http.Transport{DialContext: fd.DialContext}, Timeout: 5 * time.Second}
	defer flood.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 50 {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.Addr()+"/ws", nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := flood.Do(req)
		if err != nil {
			t.Fatalf("wrong token %d: %v", i+1, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Close {
			t.Fatalf("wrong token %d: status %d close %v, want a kept-alive 401", i+1, resp.StatusCode, resp.Close)
		}
	}
	if s.refusals != nil {
		t.Fatal("a limiter with refusals_per_source 0")
	}
}

// noKernelFilter removes l's kernel filter, so that blocked sources'
// connections reach accept and are closed there, as those queued before a
// block are, and all of them where the kernel refuses the filter.
func noKernelFilter(l *refusalLimiter) {
	l.kf.mu.Lock()
	defer l.kf.mu.Unlock()
	if l.kf.f != nil {
		_ = l.kf.f.set(nil)
	}
	l.kf.f = nil
}

// connects dials addr from source address src and reports whether a
// connection was made within timeout; a time-out reports false, any other
// error (a reset, a refusal) fails t.
func connects(t *testing.T, src, addr string, timeout time.Duration) bool {
	t.Helper()
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	t.Fatalf("dial %s from %s: %v, want a connection or a time-out", addr, src, err)
	return false
}

// dropped reports whether a connect from src to addr gets no answer within
// 300 ms: its SYN was dropped (a connection that is answered takes well
// under that on loopback).
func dropped(t *testing.T, src, addr string) bool {
	t.Helper()
	return !connects(t, src, addr, 300*time.Millisecond)
}

// mustConnect fails t unless src connects to addr within 10 s.
func mustConnect(t *testing.T, src, addr string) {
	t.Helper()
	if !connects(t, src, addr, 10*time.Second) {
		t.Fatalf("%s could not connect to %s within 10 s", src, addr)
	}
}
