package origin

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/cpustat"
)

// BenchmarkBlockedAccept measures what a blocked source's connection costs
// when it reaches accept (queued before its block, or the kernel filter
// refused; sourcefilter_linux.go drops the others before a handshake):
// a client on 127.0.0.1 (blocked, nothing exempt) connects and waits for
// the reset, one connection at a time, against the listener closing it at
// accept with accept4 on its descriptor (raw) and through
// net.TCPListener.Accept (net). The client's side is the same in both: the
// difference per op is the accept path's. cpu-µs/op is the whole process's
// CPU (both sides) per connection.
func BenchmarkBlockedAccept(b *testing.B) {
	for _, path := range []string{"raw", "net"} {
		b.Run(path, func(b *testing.B) {
			l, err := newRefusalLimiter(Config{AuthToken: "x", RefusalLimits: RefusalLimits{RefusalsPerSource: 1, RefusalWindow: time.Hour, RefusalBlock: time.Hour}}, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			l.refused("127.0.0.1:1")
			if !l.refused("127.0.0.1:1") || !l.table.blocked(netip.MustParseAddr("127.0.0.1")) {
				b.Fatal("127.0.0.1 not blocked after two refusals over a limit of one")
			}
			ln, err := listenTCP(context.Background(), "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			rl := l.listener(ln).(*refusalListener)
			noKernelFilter(l) // measure the accept path, not the kernel's drop
			if path == "net" {
				_ = rl.raw.close()
				rl.raw = nil
			} else if rl.raw == nil {
				b.Skip("no raw accept on this platform")
			}
			done := make(chan error, 1)
			go func() {
				_, err := rl.Accept() // returns only when closed
				done <- err
			}()
			addr := ln.Addr().String()
			cpu0, _ := cpustat.Process()
			b.ResetTimer()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					continue // reset before the handshake finished: closed too
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					b.Fatalf("blocked connection not closed: %v", err)
				}
				_ = c.Close()
			}
			b.StopTimer()
			cpu1, _ := cpustat.Process()
			cpu := cpu1 - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			_ = rl.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				b.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}
