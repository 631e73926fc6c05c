//go:build linux

package origin

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestAcceptErrorsAreTemporaryAsNetOnes checks that running out of file
// descriptors reads as a temporary accept error, which http.Server waits
// out, and a closed listener as net.ErrClosed, which ends it.
func TestAcceptErrorsAreTemporaryAsNetOnes(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		// http.Server asserts the type, as here; it does not unwrap.
		err := acceptError(errno)
		if ne, ok := err.(net.Error); !ok || !ne.Temporary() { //nolint:staticcheck // http.Server reads Temporary
			t.Errorf("%v: %v is not a temporary error; http.Server would stop serving", errno, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ra := newRawAcceptor(ln)
	if ra == nil {
		t.Fatal("no raw acceptor for a TCP listener")
	}
	_ = ra.close()
	_ = ln.Close()
	if _, err := ra.accept(nil, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v, want net.ErrClosed", err)
	}
}

// TestBlockedSourceClosedAtAccept checks the raw accept path over the wire:
// with no kernel filter (a connection queued before its source's block, or
// a kernel that refuses the filter), a blocked source's connection is reset
// at accept without an answer, counted, and the next connection of another
// source is handed on.
func TestBlockedSourceClosedAtAccept(t *testing.T) {
	m := metrics.New()
	om := MetricsOf(m)
	l, err := newRefusalLimiter(Config{AuthToken: "x", RefusalLimits: RefusalLimits{RefusalsPerSource: 1, RefusalWindow: time.Hour, RefusalBlock: time.Hour}}, zerolog.Nop(), om)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenTCP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := l.listener(ln).(*refusalListener)
	defer rl.Close()
	if rl.raw == nil {
		t.Fatal("no raw acceptor for a TCP listener")
	}
	noKernelFilter(l)
	floodDialer(t) // skips where 127.0.0.2 cannot be bound
	l.refused("127.0.0.2:1")
	if !l.refused("127.0.0.2:1") {
		t.Fatal("127.0.0.2 not blocked after two refusals over a limit of one")
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := rl.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	if c, err := d.Dial("tcp", ln.Addr().String()); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := c.Read(make([]byte, 1))
		c.Close()
		if rerr == nil || errors.Is(rerr, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked source's connection: read %v, want it reset at accept", rerr)
		}
	}
	c, err := net.Dial("tcp", ln.Addr().String()) // 127.0.0.1: not blocked
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-accepted:
		if got == nil {
			t.Fatal("Accept failed")
		}
		if a := got.RemoteAddr().(*net.TCPAddr).IP.String(); a != "127.0.0.1" {
			t.Fatalf("accepted a connection from %s, want 127.0.0.1's", a)
		}
		got.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("127.0.0.1's connection not accepted")
	}
	testutil.WantMetric(t, m.Gatherer(), MetricClosedAtAcceptTotal, nil, 1)
}
