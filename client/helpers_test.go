package client_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/stack"
	"github.com/pipeline-dev/pipeline/internal/stacktest"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// startStack starts an ephemeral pipeline (embedded NATS, origin, executor,
// runtime, target on free 127.0.0.1 ports), adjusted by mod, and stops it at
// test end.
func startStack(t testing.TB, mod func(*config.Config)) *stack.Stack {
	t.Helper()
	return stacktest.Start(t, mod, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
}

// dial connects a client to url and closes it at test end.
func dial(t testing.TB, url string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opts...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// seen returns the target's per-tag counts for tags starting with prefix.
func seen(t testing.TB, targetURL, prefix string) map[string]int {
	t.Helper()
	resp, err := testutil.HTTPClient(t).Get(targetURL + "/seen?prefix=" + prefix)
	if err != nil {
		t.Fatalf("seen: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("seen: %v", err)
	}
	return out.Counts
}

// clientGoroutines lists the goroutines running code of package client.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "pipeline/client.(*") && !strings.Contains(g, "client_test.") {
			out = append(out, g)
		}
	}
	return out
}

// cutProxy is a TCP proxy on 127.0.0.1 that forwards to target and, while
// cutting, closes every open connection at random intervals in [lo, hi).
type cutProxy struct {
	ln     net.Listener
	target string
	lo, hi time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	frozen map[net.Conn]bool // data read from these is dropped
	cuts   int
	done   chan struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t testing.TB, target string, lo, hi time.Duration) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, lo: lo, hi: hi, conns: map[net.Conn]struct{}{}, frozen: map[net.Conn]bool{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && !p.isFrozen(src) {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			delete(p.frozen, dst)
			delete(p.frozen, src)
			p.mu.Unlock()
		}
		p.wg.Add(2)
		go pipe(out, in)
		go pipe(in, out)
	}
}

// cut starts cutting; the returned func stops it.
func (p *cutProxy) cut() (stop func()) {
	stopCh := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			t := time.NewTimer(p.lo + rand.N(p.hi-p.lo))
			select {
			case <-t.C:
			case <-stopCh:
				t.Stop()
				return
			case <-p.done:
				t.Stop()
				return
			}
			p.mu.Lock()
			for c := range p.conns {
				c.Close()
			}
			p.cuts++
			p.mu.Unlock()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stopCh) }) }
}

// freeze makes the open connections silent in both directions without
// closing them: a peer that vanished. New connections are not affected.
func (p *cutProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.frozen[c] = true
	}
}

func (p *cutProxy) isFrozen(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen[c]
}

// cutNow closes every open connection once.
func (p *cutProxy) cutNow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.cuts++
}

// stopListening refuses new connections (open ones stay).
func (p *cutProxy) stopListening() { p.ln.Close() }

func (p *cutProxy) cutCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

func (p *cutProxy) close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// waitEnqueued waits until the origin has confirmed p.
func waitEnqueued(t testing.TB, p *client.Pending) {
	t.Helper()
	select {
	case <-p.Enqueued():
	case <-p.Done():
		_, err := p.Result()
		t.Fatalf("fetch finished before it was confirmed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("fetch never confirmed")
	}
}
